-- Private signing keys encrypted at rest: a JWE (RFC 7516, dir + A256GCM)
-- under a key-encryption key the application holds. Rows written before
-- this migration keep their plaintext JWK until the application starts
-- with a key-encryption key configured, which encrypts them.
ALTER TABLE tenancy_signing_keys ALTER COLUMN private_jwk DROP NOT NULL;
ALTER TABLE tenancy_signing_keys ADD COLUMN private_jwe text;
ALTER TABLE tenancy_signing_keys ADD CONSTRAINT tenancy_signing_keys_private_key_check
    CHECK (num_nonnulls(private_jwk, private_jwe) = 1);
