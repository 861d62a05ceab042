"""The logic cluster: Faust agents that sequence, route, deliver and persist messages."""
