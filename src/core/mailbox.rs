//! What the core has gathered for one of the shard's tasks (route
//! interest, self-service requests, reports), and that task's waker: the
//! core pushes, the task takes everything at once or waits.

use std::task::Waker;

/// Items waiting for a task of the shard.
#[derive(Debug)]
pub(super) struct Mailbox<T> {
    items: Vec<T>,
    waker: Option<Waker>,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Mailbox {
            items: Vec::new(),
            waker: None,
        }
    }
}

impl<T> Mailbox<T> {
    /// Adds an item and wakes the task.
    pub(super) fn push(&mut self, item: T) {
        self.items.push(item);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Moves every item into `into`, or registers `waker` for the next
    /// one: whether there were any.
    pub(super) fn poll(&mut self, into: &mut Vec<T>, waker: &Waker) -> bool {
        if self.items.is_empty() {
            self.waker = Some(waker.clone());
            return false;
        }
        into.append(&mut self.items);
        true
    }

    /// Takes every item (the waker stays registered).
    pub(super) fn take(&mut self) -> Vec<T> {
        std::mem::take(&mut self.items)
    }

    /// Whether nothing waits.
    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}
