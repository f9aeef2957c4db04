-- Encryption at rest: each database node's own key, sealed (AES-256-GCM under the
-- controller's master key, which is kept outside the store), and what each node's agent
-- observes of its data dir's encryption.
CREATE TABLE instance_keys (
  instance_id text PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
  -- format byte | nonce | tag | ciphertext of the 64-byte key (store/instance-keys.store.ts)
  sealed bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- null: not reported yet (gateways never report it).
ALTER TABLE instances ADD COLUMN encrypted_at_rest boolean;
-- Why a node is not encrypted, or with what it is.
ALTER TABLE instances ADD COLUMN at_rest_note text NOT NULL DEFAULT '';
