-- Structured payloads of system messages (friend requests, notices), so they
-- survive the archive and come back on history sync. NULL for chat messages.
ALTER TABLE messages ADD COLUMN data JSON NULL;
