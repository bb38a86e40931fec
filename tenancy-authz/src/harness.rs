//! Policy tests for users.
