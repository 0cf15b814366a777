//! `POST /replay`: re-delivers a time window of a route's events (helper B).
