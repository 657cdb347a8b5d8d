//! A plugin whose root module has the right name and version but a different layout, as a
//! plugin built against an incompatible switchyard-abi would. The host must refuse it.

use abi_stable::{
    declare_root_module_statics, export_root_module, library::RootModule, package_version_strings,
    prefix_type::PrefixTypeTrait, sabi_types::VersionStrings, std_types::RString, StableAbi,
};

/// Not the real PluginMod: `metadata` takes an argument and `create` is missing.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    pub abi_version: u64,
    #[sabi(last_prefix_field)]
    pub metadata: extern "C" fn(u32) -> RString,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "switchyard_plugin";
    const NAME: &'static str = "switchyard_plugin";
    // Pretend to be built with the same switchyard-abi version as the host.
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

extern "C" fn metadata(_: u32) -> RString {
    RString::from("{\"backends\": [\"mismatch\"]}")
}

#[export_root_module]
pub fn get_library() -> PluginModRef {
    PluginMod { abi_version: 1, metadata }.leak_into_prefix()
}
