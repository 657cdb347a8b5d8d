//! A shared library that exports no Switchyard root module.

/// An unrelated exported function.
#[no_mangle]
pub extern "C" fn not_a_plugin_answer() -> u32 {
    42
}
