"""Auth: password hashing (``auth.passwords``) and JWT tokens (``auth.tokens``)."""
