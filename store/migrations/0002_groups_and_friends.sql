-- Groups with their members, and friendships (requests and accepted pairs).
CREATE TABLE chat_groups (
    group_id   VARCHAR(64)  NOT NULL PRIMARY KEY,
    name       VARCHAR(128) NOT NULL,
    owner      VARCHAR(64)  NOT NULL,
    created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE group_members (
    group_id  VARCHAR(64) NOT NULL,
    user_id   VARCHAR(64) NOT NULL,
    role      VARCHAR(16) NOT NULL DEFAULT 'member',
    joined_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (group_id, user_id),
    KEY member_groups (user_id, group_id),
    CONSTRAINT member_group FOREIGN KEY (group_id) REFERENCES chat_groups (group_id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per ordered pair: (requester, addressee) while pending; accepted pairs
-- are stored both ways so "my friends" is one index range.
CREATE TABLE friendships (
    user_id    VARCHAR(64) NOT NULL,
    friend_id  VARCHAR(64) NOT NULL,
    status     VARCHAR(16) NOT NULL,
    created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (user_id, friend_id),
    KEY incoming (friend_id, status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
