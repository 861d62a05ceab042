"""The dispatcher: HTTP service for users, tokens and connector assignment."""
