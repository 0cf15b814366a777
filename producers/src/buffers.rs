//! Encode buffers reused across publishes: librdkafka copies the payload when
//! a record is enqueued, so the buffer can serve the next event at once
//! instead of being freed and allocated again per event.

use std::cell::RefCell;

/// Buffers kept per thread; more in flight at once are allocated and dropped.
const KEPT: usize = 64;
/// Enough for every event in our catalog's examples without growing.
const CAPACITY: usize = 512;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer, reused when this thread has one.
pub(crate) fn take() -> Vec<u8> {
    FREE.with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Vec::with_capacity(CAPACITY))
}

/// Hands `buffer` back for a later `take` on this thread.
pub(crate) fn give_back(mut buffer: Vec<u8>) {
    buffer.clear();
    FREE.with_borrow_mut(|free| {
        if free.len() < KEPT {
            free.push(buffer);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_reused_empty() {
        let mut buffer = take();
        buffer.extend_from_slice(b"payload");
        let address = buffer.as_ptr();
        give_back(buffer);
        let again = take();
        assert_eq!((again.as_ptr(), again.len()), (address, 0));
    }
}
