//! `switchyard chat`: an interactive terminal chat that streams replies and keeps the history.
//!
//! At a terminal it uses `rustyline` (line editing, history); with stdin piped it reads one user
//! message per line and prints each reply on its own line, so scripts can drive it. Ctrl-C
//! stops the reply being generated and returns to the prompt; Ctrl-D or `exit` quits.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use clap::Args;
use rustyline::error::ReadlineError;
use switchyard::placeholders::{self, MediaKind, Placeholders};
use switchyard::{
    Canceller, ChatRequest, Error, ErrorKind, GenerationParams, MediaInput, Message, ModelRouter,
    Response, ResponseCollector,
};

use crate::ModelArgs;
use crate::common::load_router;
use crate::media;

/// Arguments of `switchyard chat`.
#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// System prompt for the session (changeable with `/system`).
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
}

const HELP: &str = "\
Commands:
  clear              forget the conversation so far
  exit               quit (also Ctrl-D)
  /system TEXT       set the system prompt (empty TEXT removes it); clears the history
  /set KEY=VALUE     change a generation setting, e.g. /set temperature=0.2, /set stop=###
                     (/set model=NAME switches the model or LoRA adapter, as /model does)
  /save FILE         write the conversation to FILE as JSON
  /model [NAME]      list the models and named adapters, or switch to NAME
  /image PATH        attach an image (a file or a data: URL) to the next message
  /video PATH        attach a video to the next message
  /help              this text
Ctrl-C stops the reply being generated.";

/// The stream being generated, for the Ctrl-C handler.
static CURRENT: Mutex<Option<Canceller>> = Mutex::new(None);

struct Session {
    models: ModelRouter,
    /// The model replies come from (a name of `models`).
    current: String,
    system: Option<String>,
    history: Vec<Message>,
    generation: GenerationParams,
    /// The conversation's media so far (their placeholders are in `history`).
    media: Media,
    /// Media attached with `/image` and `/video` for the next message, in order.
    pending: Vec<(MediaKind, MediaInput)>,
}

/// Images and videos of a conversation, in order.
#[derive(Default, Clone)]
struct Media {
    images: Vec<MediaInput>,
    videos: Vec<MediaInput>,
}

enum Step {
    Continue,
    Exit,
}

impl Session {
    /// Handles one input line: a command or a user message.
    fn handle(&mut self, line: &str, out: &mut dyn Write, tty: bool) -> anyhow::Result<Step> {
        let trimmed = line.trim();
        match trimmed {
            "" => return Ok(Step::Continue),
            "exit" => return Ok(Step::Exit),
            "clear" => {
                self.forget();
                writeln!(out, "History has been removed.")?;
                return Ok(Step::Continue);
            }
            "/help" => {
                writeln!(out, "{HELP}")?;
                return Ok(Step::Continue);
            }
            _ => {}
        }
        if let Some(rest) = trimmed.strip_prefix("/system") {
            let text = rest.trim();
            self.system = (!text.is_empty()).then(|| text.to_owned());
            self.forget();
            writeln!(
                out,
                "System prompt {}; history cleared.",
                if text.is_empty() { "removed" } else { "set" }
            )?;
            return Ok(Step::Continue);
        }
        if let Some(rest) = trimmed.strip_prefix("/set ") {
            match rest.split_once('=') {
                // `model` picks a model or a named adapter, as `/model NAME` does.
                Some((k, v)) if k.trim() == "model" => self.switch_model(v.trim(), out)?,
                Some((k, v)) => {
                    match switchyard::generation::set_param(&mut self.generation, k.trim(), v) {
                        Ok(()) => writeln!(out, "{} = {}", k.trim(), v.trim())?,
                        Err(e) => writeln!(out, "error: {e}")?,
                    }
                }
                None => writeln!(out, "usage: /set KEY=VALUE")?,
            }
            return Ok(Step::Continue);
        }
        if let Some(rest) = trimmed.strip_prefix("/model") {
            let name = rest.trim();
            if name.is_empty() {
                for m in self.models.status() {
                    let mark = if m.name == self.current { "*" } else { " " };
                    writeln!(out, "{mark} {} ({}, {:?})", m.name, m.backend, m.status)?;
                }
            } else {
                self.switch_model(name, out)?;
            }
            return Ok(Step::Continue);
        }
        if let Some(rest) = trimmed.strip_prefix("/save") {
            let file = rest.trim();
            if file.is_empty() {
                writeln!(out, "usage: /save FILE")?;
            } else {
                match self.save(Path::new(file)) {
                    Ok(()) => writeln!(out, "Saved {} messages to {file}.", self.history.len())?,
                    Err(e) => writeln!(out, "error: {e:#}")?,
                }
            }
            return Ok(Step::Continue);
        }
        for (command, kind) in [("/image", MediaKind::Image), ("/video", MediaKind::Video)] {
            if let Some(rest) = trimmed.strip_prefix(command)
                && (rest.is_empty() || rest.starts_with(' '))
            {
                self.attach(rest.trim(), kind, out)?;
                return Ok(Step::Continue);
            }
        }
        if trimmed.starts_with('/') {
            writeln!(out, "unknown command `{trimmed}`; /help lists the commands")?;
            return Ok(Step::Continue);
        }
        self.reply(line.to_owned(), out, tty)?;
        Ok(Step::Continue)
    }

    /// Replies come from `name` (a model, an alias or a named LoRA adapter) from now on.
    fn switch_model(&mut self, name: &str, out: &mut dyn Write) -> std::io::Result<()> {
        match self.models.canonical(name) {
            Ok(n) => {
                writeln!(out, "Model: {n}.")?;
                self.current = n;
            }
            Err(e) => writeln!(out, "error: {e}")?,
        }
        Ok(())
    }

    /// Forgets the conversation, its media and any attached to the next message.
    fn forget(&mut self) {
        self.history.clear();
        self.media = Media::default();
        self.pending.clear();
    }

    /// `/image PATH` or `/video PATH`: checks that the model takes it, reads it, and keeps it
    /// for the next message.
    fn attach(&mut self, spec: &str, kind: MediaKind, out: &mut dyn Write) -> anyhow::Result<()> {
        let what = if kind == MediaKind::Image {
            "image"
        } else {
            "video"
        };
        if spec.is_empty() {
            writeln!(out, "usage: /{what} PATH (a file, or a data: URL)")?;
            return Ok(());
        }
        let info = match self.models.get(&self.current) {
            Ok(m) => m.info().clone(),
            Err(e) => {
                writeln!(out, "error: {e}")?;
                return Ok(());
            }
        };
        let takes = match kind {
            MediaKind::Image => info.capabilities.images,
            _ => info.capabilities.videos,
        };
        if !takes {
            writeln!(
                out,
                "error: backend `{}` with model `{}` does not take {}s; use a model whose capabilities list `{}` (/model lists them)",
                info.backend,
                info.model,
                what,
                kind.field()
            )?;
            return Ok(());
        }
        let total = self.media.images.len() + self.media.videos.len() + self.pending.len();
        if let Err(e) = media::check_count(total + 1) {
            writeln!(
                out,
                "error: {e} (counting the conversation's earlier ones; `clear` forgets them)"
            )?;
            return Ok(());
        }
        let cwd = std::env::current_dir().unwrap_or_default();
        match media::load(spec, &cwd, kind) {
            Ok(m) => {
                self.pending.push((kind, m));
                writeln!(
                    out,
                    "Attached {what} {spec} ({} for the next message).",
                    self.pending.len()
                )?;
            }
            Err(e) => writeln!(out, "error: {e}")?,
        }
        Ok(())
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let doc = serde_json::json!({ "system": self.system, "messages": self.history });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn reply(&mut self, text: String, out: &mut dyn Write, tty: bool) -> anyhow::Result<()> {
        // Attached media go in front of this message's text, in the order attached, unless
        // the text places them itself with `<image>`/`<video>`.
        let tags = Placeholders::from_env();
        let mut media = self.media.clone();
        let mut prefix = String::new();
        let placed = placeholders::count(&[Message::user(text.as_str())], &tags);
        for (kind, m) in self.pending.iter().cloned() {
            let (list, i) = match kind {
                MediaKind::Image => (&mut media.images, 0),
                _ => (&mut media.videos, 1),
            };
            list.push(m);
            if placed[i] == 0 {
                prefix.push_str(tags.of(kind));
            }
        }
        self.history.push(Message::user(prefix + &text));
        let request = ChatRequest {
            messages: self.history.clone(),
            system: self.system.clone(),
            generation: self.generation.clone(),
            images: media.images.clone(),
            videos: media.videos.clone(),
            ..Default::default()
        };
        let stream = match self
            .models
            .get(&self.current)
            .and_then(|m| m.stream_chat(request))
        {
            Ok(s) => s,
            Err(e) => {
                self.history.pop();
                writeln!(out, "error: {e}")?;
                return Ok(());
            }
        };
        self.pending.clear();
        *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = Some(stream.canceller());
        let echo_off = EchoOff::new(tty);
        if tty {
            write!(out, "Assistant: ")?;
        }
        out.flush()?;
        let mut reply = ResponseCollector::new(1);
        let mut interrupted = false;
        let mut in_reasoning = false;
        for event in stream {
            match event {
                Ok(e) => {
                    // Reasoning is shown dimmed (in brackets when not a terminal), the answer
                    // as it comes; tool calls are listed when the reply ends.
                    if !e.reasoning.is_empty() {
                        if !in_reasoning {
                            write!(out, "{}", if tty { "\x1b[2m" } else { "[reasoning] " })?;
                            in_reasoning = true;
                        }
                        write!(out, "{}", e.reasoning)?;
                    }
                    if in_reasoning && !e.delta.is_empty() {
                        write!(out, "{}", if tty { "\x1b[0m\n" } else { " [/reasoning] " })?;
                        in_reasoning = false;
                    }
                    write!(out, "{}", e.delta)?;
                    out.flush()?;
                    if let Err(msg) = reply.push(&e) {
                        writeln!(out, "\nerror: {msg}")?;
                        break;
                    }
                }
                Err(Error::Engine(e)) if e.kind == ErrorKind::CANCELLED => {
                    interrupted = true;
                    break;
                }
                Err(e) => {
                    writeln!(out)?;
                    writeln!(out, "error: {e}")?;
                    break;
                }
            }
        }
        *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = None;
        drop(echo_off);
        if in_reasoning && tty {
            write!(out, "\x1b[0m")?;
        }
        if interrupted {
            write!(out, " [interrupted]")?;
        }
        let reply = reply.finish().pop().unwrap_or_else(Response::empty);
        for call in reply.tool_calls.iter().flatten() {
            write!(
                out,
                "\n[tool call {}] {}({})",
                call.id, call.function.name, call.function.arguments
            )?;
        }
        writeln!(out)?;
        if tty {
            writeln!(out)?;
        }
        self.media = media;
        let mut message = Message::assistant(reply.text);
        message.tool_calls = reply.tool_calls;
        message.reasoning_content = reply.reasoning_content;
        self.history.push(message);
        Ok(())
    }
}

/// While a reply streams, the terminal does not echo keys: a person typing ahead does not see
/// their keys mixed into the reply, and the keys wait (unechoed) for the next prompt, where the
/// line editor shows them. Restored when dropped.
struct EchoOff {
    #[cfg(unix)]
    saved: Option<nix::sys::termios::Termios>,
}

impl EchoOff {
    fn new(tty: bool) -> Self {
        #[cfg(unix)]
        {
            use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
            let stdin = std::io::stdin();
            let saved = tty.then(|| tcgetattr(&stdin).ok()).flatten();
            if let Some(saved) = &saved {
                let mut quiet = saved.clone();
                quiet.local_flags.remove(LocalFlags::ECHO);
                let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
            }
            Self { saved }
        }
        #[cfg(not(unix))]
        {
            let _ = tty;
            Self {}
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

fn history_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/switchyard/chat_history.txt"))
}

/// Ctrl-C cancels the reply being generated, or quits when there is none.
fn install_ctrl_c() -> anyhow::Result<()> {
    ctrlc::set_handler(move || {
        let current = CURRENT.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match current {
            Some(c) => c.cancel(),
            None => std::process::exit(130),
        }
    })
    .context("cannot install the Ctrl-C handler")
}

/// Runs the chat loop.
pub fn run(args: ChatArgs, plugin_dir: Option<&Path>) -> anyhow::Result<i32> {
    let (models, _, elapsed) = load_router(&args.model, plugin_dir, false)?;
    let current = models.canonical("")?;
    let info = models.get(&current)?.info().clone();
    let tty = std::io::stdin().is_terminal();
    let others = models.names().len() - 1;
    let banner = format!(
        "Switchyard chat: backend {} | model {} | loaded in {:.2} s{}",
        info.backend,
        info.model,
        elapsed.as_secs_f64(),
        if others > 0 {
            format!(" | {others} more model(s): /model lists them")
        } else {
            String::new()
        }
    );
    let mut session = Session {
        models,
        current,
        system: args.system,
        history: Vec::new(),
        generation: GenerationParams::default(),
        media: Media::default(),
        pending: Vec::new(),
    };
    let mut stdout = std::io::stdout();
    if !tty {
        install_ctrl_c()?;
        eprintln!("{banner}");
        for line in std::io::stdin().lock().lines() {
            let line = line.context("cannot read stdin")?;
            if let Step::Exit = session.handle(&line, &mut stdout, false)? {
                break;
            }
        }
        return Ok(0);
    }
    println!("{banner}");
    println!("Type a message; `clear` forgets the history, `exit` quits, /help lists commands.\n");
    let mut editor = rustyline::DefaultEditor::new().context("cannot open the terminal")?;
    // After the editor: it takes SIGINT for itself when created (for a prompt, where the
    // terminal is raw and Ctrl-C arrives as a key anyway); while a reply streams, Ctrl-C must
    // reach the handler that cancels it.
    install_ctrl_c()?;
    let history = history_file();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    loop {
        match editor.readline("User: ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if let Step::Exit = session.handle(&line, &mut stdout, true)? {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("cannot read from the terminal"),
        }
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(h);
    }
    Ok(0)
}
