-- When a spent authorization code was presented again: a replay arriving
-- while the first redemption is still opening its session is seen by that
-- redemption, which then ends the session it opened.
ALTER TABLE tenancy_oauth_codes ADD COLUMN replayed_at timestamptz;
