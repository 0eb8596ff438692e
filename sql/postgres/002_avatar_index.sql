-- Media access checks whether a file is anyone's avatar on every read by a
-- non-uploader: index the column instead of scanning users.
CREATE INDEX users_avatar_media ON users (avatar_media_id) WHERE avatar_media_id IS NOT NULL;
