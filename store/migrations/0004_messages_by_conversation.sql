-- Cluster the archive by conversation. The random msg_id as the clustered key,
-- and the unique keys on (sender, client_msg_id), put every insert on a random
-- page of the whole table: once the table outgrew the buffer pool, inserts fell
-- from ~27,000 to ~4,700 rows/s by one million rows (docs/operations.md, "Sizing
-- the archive's buffer pool"). Keyed by (conv_id, seq), an insert touches the
-- last page of its conversation, and history reads are one range of the key.
-- msg_id is uuid5(conv_id, seq), so the key still makes a replayed write a
-- duplicate; retries are deduplicated by the sequencer, not here.
ALTER TABLE messages
    DROP PRIMARY KEY,
    DROP INDEX conv_seq,
    DROP INDEX sender_client_msg,
    ADD PRIMARY KEY (conv_id, seq);
