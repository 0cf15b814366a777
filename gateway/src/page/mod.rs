//! The live page `GET /` (helper B).
