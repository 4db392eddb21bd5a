//! Without the `encrypt` feature: types that cannot exist, so the engine's
//! encrypted paths compile away. An encrypted frame met by such a build is
//! an error where it is read.

use super::Place;
use crate::log::frame::{Frame, FrameSpec};

/// Never constructed without the `encrypt` feature.
pub(crate) enum Crypto {}

impl Crypto {
    pub(crate) fn mac(&self, _ns: u32, _key: &[u8]) -> (u64, u64) {
        match *self {}
    }

    pub(crate) fn seal_frame(
        &self,
        _at: Place<'_>,
        _off: u32,
        _spec: &FrameSpec<'_>,
        _mac: Option<(u64, u64)>,
        _out: &mut [u8],
    ) {
        match *self {}
    }

    pub(crate) fn open_frame<'b>(
        &self,
        _at: Place<'_>,
        _off: u32,
        _f: &Frame<'_>,
        _buf: &'b mut Vec<u8>,
    ) -> Result<Frame<'b>, &'static str> {
        match *self {}
    }

    pub(crate) fn hint_tag(&self, _body: &[u8]) -> [u8; 32] {
        match *self {}
    }

    pub(crate) fn hint_tag_ok(&self, _body: &[u8], _tag: &[u8]) -> bool {
        match *self {}
    }

    pub(crate) fn keyring(&self) -> &[u8] {
        match *self {}
    }

    pub(crate) fn seal_name(&self, _id: u32, _name: &str) -> Vec<u8> {
        match *self {}
    }

    pub(crate) fn open_name(&self, _id: u32, _sealed: &[u8]) -> Option<String> {
        match *self {}
    }
}

/// Per-segment key cache: empty without the feature.
#[derive(Default)]
pub(crate) struct KeyCache;
