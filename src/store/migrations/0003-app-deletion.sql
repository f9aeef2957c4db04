-- Deleting an app keeps its row: its deleted add-ons (databases.app_id), their operations
-- and the events still point to it. The name goes back to the shared namespace, so a
-- deleted app has no name and remembers the one it had.
ALTER TABLE apps ADD COLUMN deleted_at timestamptz;
ALTER TABLE apps ADD COLUMN deleted_name text;
ALTER TABLE apps ALTER COLUMN name DROP NOT NULL;
ALTER TABLE apps ADD CONSTRAINT apps_live_named CHECK ((deleted_at IS NULL) = (name IS NOT NULL));

-- An add-on must not appear on an app being deleted. FOR SHARE waits for a deletion in
-- progress (it holds the app row FOR UPDATE) and then sees its outcome.
CREATE FUNCTION databases_require_live_app() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.app_id IS NOT NULL THEN
    PERFORM 1 FROM apps WHERE id = NEW.app_id AND deleted_at IS NULL FOR SHARE;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'app % is deleted', NEW.app_id USING ERRCODE = 'foreign_key_violation';
    END IF;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER databases_require_live_app BEFORE INSERT ON databases
  FOR EACH ROW EXECUTE FUNCTION databases_require_live_app();
