-- Users (Auth) and the permanent message record.
CREATE TABLE users (
    user_id       VARCHAR(64)  NOT NULL PRIMARY KEY,
    password_hash VARCHAR(255) NOT NULL,
    created_at    TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE messages (
    msg_id        CHAR(36)     NOT NULL PRIMARY KEY,
    conv_id       VARCHAR(140) NOT NULL,
    seq           BIGINT       NOT NULL,
    sender        VARCHAR(64)  NOT NULL,
    recipient     VARCHAR(64)  NULL,
    group_id      VARCHAR(64)  NULL,
    kind          VARCHAR(16)  NOT NULL,
    text          MEDIUMTEXT   NOT NULL,
    ts            BIGINT       NOT NULL,
    client_msg_id VARCHAR(128) NOT NULL,
    UNIQUE KEY conv_seq (conv_id, seq),
    UNIQUE KEY sender_client_msg (sender, client_msg_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
