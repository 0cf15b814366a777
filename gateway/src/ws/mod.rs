//! The WebSocket endpoint `/ws` (helper B).
