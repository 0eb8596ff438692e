-- Only messages sent with a client_id need the idempotency index: a send
-- without one is never looked up by it, and NULLs never conflict. Sends
-- without a client_id (bots, webhooks, simple clients) write one index less.
DROP INDEX messages_idempotency;
CREATE UNIQUE INDEX messages_idempotency ON messages (sender_id, client_id)
    WHERE client_id IS NOT NULL;
