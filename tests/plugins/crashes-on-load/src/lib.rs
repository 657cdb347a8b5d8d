//! A hostile plugin file: its constructor runs when the library is loaded, before any
//! Switchyard code can check it.

#[inline(never)]
#[allow(unconditional_recursion)] // the point: it overflows the stack
fn recurse(n: u64) -> u64 {
    let pad = [n; 64];
    std::hint::black_box(&pad);
    recurse(n + 1) + pad[0]
}

extern "C" fn on_load() {
    match std::env::var("CRASH_ON_LOAD").as_deref() {
        Ok("exit") => std::process::exit(0),
        Ok("overflow") => {
            std::hint::black_box(recurse(0));
        }
        // Loaded without the variable set (a stray copy), it still refuses to be harmless.
        _ => std::process::abort(),
    }
}

// SAFETY: a function pointer in `.init_array` is what the dynamic loader calls when it loads
// the library; `on_load` takes no arguments and is `extern "C"`, as the loader expects.
#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn() = on_load;
