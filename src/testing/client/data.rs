//! The test peer's data channels: what opened, what arrived on each (in order), what
//! closed.

use str0m::channel::{ChannelConfig, ChannelData, ChannelId};

/// One data channel of the peer and what it received.
#[derive(Debug, Clone)]
pub struct DataChannelState {
    /// Its label.
    pub label: String,
    id: ChannelId,
    /// Open now (a DCEP open or ack came, and no close since).
    pub open: bool,
    /// Closed after being open.
    pub closed: bool,
    /// Its configuration as str0m has it (ordering, reliability), once open.
    pub config: Option<ChannelConfig>,
    /// Messages received, in arrival order: binary or text, and the bytes (since the last
    /// [`ClientPeer::clear_data_messages`](super::ClientPeer::clear_data_messages)).
    pub messages: Vec<(bool, Vec<u8>)>,
    /// Messages received in all, cleared or not.
    pub received: u64,
}

/// Every data channel of a peer, by label.
#[derive(Debug, Default)]
pub struct Channels {
    list: Vec<DataChannelState>,
}

impl Channels {
    pub(super) fn created(&mut self, id: ChannelId, label: &str) {
        self.list.push(DataChannelState {
            label: label.to_string(),
            id,
            open: false,
            closed: false,
            config: None,
            messages: Vec::new(),
            received: 0,
        });
    }

    pub(super) fn opened(&mut self, id: ChannelId, label: String) {
        match self.list.iter_mut().find(|c| c.id == id) {
            Some(c) => c.open = true,
            None => self.list.push(DataChannelState {
                label,
                id,
                open: true,
                closed: false,
                config: None,
                messages: Vec::new(),
                received: 0,
            }),
        }
    }

    pub(super) fn set_config(&mut self, id: ChannelId, config: Option<ChannelConfig>) {
        if let Some(c) = self.list.iter_mut().find(|c| c.id == id) {
            if config.is_some() {
                c.config = config;
            }
        }
    }

    pub(super) fn received(&mut self, d: ChannelData) {
        if let Some(c) = self.list.iter_mut().find(|c| c.id == d.id) {
            c.messages.push((d.binary, d.data));
            c.received += 1;
        }
    }

    pub(super) fn closed(&mut self, id: ChannelId) {
        if let Some(c) = self.list.iter_mut().find(|c| c.id == id) {
            c.open = false;
            c.closed = true;
        }
    }

    pub(super) fn open_id(&self, label: &str) -> Option<ChannelId> {
        self.list
            .iter()
            .find(|c| c.label == label && c.open)
            .map(|c| c.id)
    }

    /// Messages received on all channels, cleared or not.
    pub(super) fn received_total(&self) -> u64 {
        self.list.iter().map(|c| c.received).sum()
    }

    /// Drop the messages kept (their count stays).
    pub(super) fn clear_messages(&mut self) {
        for c in &mut self.list {
            c.messages.clear();
        }
    }

    /// The channel labelled `label`.
    pub fn get(&self, label: &str) -> Option<&DataChannelState> {
        self.list.iter().find(|c| c.label == label)
    }
}
