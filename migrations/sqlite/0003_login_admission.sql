-- Atomic login admission: attempts admitted and not yet settled, and the
-- answer of the latest admission (read back by RETURNING in the same
-- statement).
ALTER TABLE login_failures ADD COLUMN pending BIGINT NOT NULL DEFAULT 0;
ALTER TABLE login_failures ADD COLUMN admitted BIGINT NOT NULL DEFAULT 0;
