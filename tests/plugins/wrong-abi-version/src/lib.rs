//! A plugin with the right layout that claims a future Switchyard ABI number. The host must
//! refuse it with a message naming both numbers.

use abi_stable::{
    export_root_module,
    prefix_type::PrefixTypeTrait,
    std_types::{RResult, RStr, RString},
};
use switchyard_abi::{EngineBox, EngineError, PluginMod, PluginModRef, ABI_VERSION};

extern "C" fn metadata() -> RString {
    RString::from("{\"backends\": [\"from-the-future\"], \"version\": \"9.9.9\"}")
}

extern "C" fn create(_: RStr<'_>) -> RResult<EngineBox, EngineError> {
    RResult::RErr(EngineError::backend("never created"))
}

#[export_root_module]
pub fn get_library() -> PluginModRef {
    PluginMod {
        abi_version: ABI_VERSION + 1,
        metadata,
        create,
    }
    .leak_into_prefix()
}
