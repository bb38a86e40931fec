-- Retention: indexes for the purge of ended sessions, spent refresh tokens,
-- old throttle counters and used or expired one-time tokens.
CREATE INDEX tenancy_sessions_ends_idx ON tenancy_sessions (LEAST(idle_expires_at, absolute_expires_at));
CREATE INDEX tenancy_refresh_tokens_rotated_idx ON tenancy_refresh_tokens (rotated_at) WHERE rotated_at IS NOT NULL;
CREATE INDEX tenancy_login_throttle_window_idx ON tenancy_login_throttle (window_started);
CREATE INDEX tenancy_one_time_tokens_expires_idx ON tenancy_one_time_tokens (expires_at);
CREATE INDEX tenancy_one_time_tokens_used_idx ON tenancy_one_time_tokens (used_at) WHERE used_at IS NOT NULL;
