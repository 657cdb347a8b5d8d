//! The named templates, as LLaMA-Factory registers them (`register_template` in
//! `src/llamafactory/data/template.py`): each entry lists only what the registration sets, and
//! [`build`] fills in the rest with `register_template`'s defaults.

use crate::tools::ToolFormat;
use crate::{Error, Kind, Result, Slot, Template};

use Slot::{Bos, Eos, Text};

/// One `register_template(...)` call: `None` / empty means "not given".
#[derive(Default)]
struct Spec {
    name: &'static str,
    user: Option<&'static [Slot]>,
    assistant: Option<&'static [Slot]>,
    system: Option<&'static [Slot]>,
    /// `format_function`: its slots and tool format.
    function: Option<(&'static [Slot], ToolFormat)>,
    observation: Option<&'static [Slot]>,
    /// `format_tools`' tool format.
    tools: Option<ToolFormat>,
    prefix: &'static [Slot],
    default_system: &'static str,
    stop_words: &'static [&'static str],
    efficient_eos: bool,
    replace_eos: bool,
    replace_jinja_template: bool,
    kind: Kind,
}

const CONTENT: &[Slot] = &[Text("{{content}}")];
const CONTENT_EOS: &[Slot] = &[Text("{{content}}"), Eos];

/// `register_template`'s defaults: the user, system and observation formats are the content
/// alone (observation falls back to the user format first), the assistant format is the
/// content and EOS (content alone with `efficient_eos`), function calls use the assistant's
/// slots with the `default` tool format, and so do the tool descriptions.
fn build(s: Spec) -> Template {
    let default_slots = if s.efficient_eos {
        CONTENT
    } else {
        CONTENT_EOS
    };
    let assistant = s.assistant.unwrap_or(default_slots);
    let (function, function_format) = s.function.unwrap_or((assistant, ToolFormat::Default));
    Template {
        name: s.name,
        user: s.user.unwrap_or(CONTENT),
        assistant,
        system: s.system.unwrap_or(CONTENT),
        function,
        function_format,
        observation: s.observation.or(s.user).unwrap_or(CONTENT),
        tool_format: s.tools.unwrap_or(ToolFormat::Default),
        prefix: s.prefix,
        default_system: s.default_system,
        stop_words: s.stop_words,
        thought_words: ("<think>\n", "\n</think>\n\n"),
        tool_call_words: ("<tool_call>", "</tool_call>"),
        efficient_eos: s.efficient_eos,
        replace_eos: s.replace_eos,
        replace_jinja_template: s.replace_jinja_template,
        kind: s.kind,
    }
}

const IM_USER: &[Slot] = &[Text(
    "<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n",
)];
const IM_ASSISTANT: &[Slot] = &[Text("{{content}}<|im_end|>\n")];
const IM_SYSTEM: &[Slot] = &[Text("<|im_start|>system\n{{content}}<|im_end|>\n")];
const QWEN_OBSERVATION: &[Slot] = &[Text(
    "<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
)];
const GEMMA_USER: &[Slot] = &[Text(
    "<start_of_turn>user\n{{content}}<end_of_turn>\n<start_of_turn>model\n",
)];
const GEMMA_ASSISTANT: &[Slot] = &[Text("{{content}}<end_of_turn>\n")];
const GEMMA_OBSERVATION: &[Slot] = &[Text(
    "<start_of_turn>tool\n{{content}}<end_of_turn>\n<start_of_turn>model\n",
)];
const SYSTEM_PARAGRAPH: &[Slot] = &[Text("{{content}}\n\n")];

/// Qwen 2.5 / Qwen 3 turns (`qwen`, `qwen3`, `qwen3_nothink`).
fn qwen(name: &'static str, default_system: &'static str, kind: Kind) -> Spec {
    Spec {
        name,
        user: Some(IM_USER),
        assistant: Some(IM_ASSISTANT),
        system: Some(IM_SYSTEM),
        function: Some((IM_ASSISTANT, ToolFormat::Qwen)),
        observation: Some(QWEN_OBSERVATION),
        tools: Some(ToolFormat::Qwen),
        default_system,
        stop_words: &["<|im_end|>"],
        replace_eos: true,
        kind,
        ..Default::default()
    }
}

/// Gemma and Gemma 3 (text): the system prompt joins the first user turn.
fn gemma(name: &'static str) -> Spec {
    Spec {
        name,
        user: Some(GEMMA_USER),
        assistant: Some(GEMMA_ASSISTANT),
        system: Some(SYSTEM_PARAGRAPH),
        observation: Some(GEMMA_OBSERVATION),
        prefix: &[Bos],
        stop_words: &["<end_of_turn>"],
        replace_eos: true,
        kind: Kind::Llama2,
        ..Default::default()
    }
}

fn specs() -> Vec<Spec> {
    vec![
        Spec {
            name: "alpaca",
            user: Some(&[Text("### Instruction:\n{{content}}\n\n### Response:\n")]),
            assistant: Some(&[Text("{{content}}"), Eos, Text("\n\n")]),
            default_system: "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n",
            replace_jinja_template: true,
            ..Default::default()
        },
        Spec {
            name: "chatml",
            user: Some(IM_USER),
            assistant: Some(IM_ASSISTANT),
            system: Some(IM_SYSTEM),
            observation: Some(&[Text(
                "<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n",
            )]),
            stop_words: &["<|im_end|>", "<|im_start|>"],
            replace_eos: true,
            replace_jinja_template: true,
            ..Default::default()
        },
        Spec {
            name: "deepseek3",
            user: Some(&[Text("<｜User｜>{{content}}<｜Assistant｜>")]),
            prefix: &[Bos],
            ..Default::default()
        },
        Spec {
            name: "default",
            user: Some(&[Text("Human: {{content}}"), Eos, Text("\nAssistant:")]),
            assistant: Some(&[Text("{{content}}"), Eos, Text("\n")]),
            system: Some(&[Text("System: {{content}}"), Eos, Text("\n")]),
            replace_jinja_template: true,
            ..Default::default()
        },
        Spec {
            name: "empty",
            assistant: Some(CONTENT),
            ..Default::default()
        },
        gemma("gemma"),
        gemma("gemma3"),
        Spec {
            name: "glm4",
            user: Some(&[Text("<|user|>\n{{content}}<|assistant|>")]),
            assistant: Some(&[Text("\n{{content}}")]),
            system: Some(&[Text("<|system|>\n{{content}}")]),
            function: Some((CONTENT, ToolFormat::Glm4)),
            observation: Some(&[Text("<|observation|>\n{{content}}<|assistant|>")]),
            tools: Some(ToolFormat::Glm4),
            prefix: &[Text("[gMASK]<sop>")],
            stop_words: &["<|user|>", "<|observation|>"],
            efficient_eos: true,
            ..Default::default()
        },
        Spec {
            name: "llama2",
            user: Some(&[Bos, Text("[INST] {{content}} [/INST]")]),
            system: Some(&[Text("<<SYS>>\n{{content}}\n<</SYS>>\n\n")]),
            kind: Kind::Llama2,
            ..Default::default()
        },
        Spec {
            name: "llama3",
            user: Some(&[Text(
                "<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            )]),
            assistant: Some(&[Text("{{content}}<|eot_id|>")]),
            system: Some(&[Text(
                "<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>",
            )]),
            function: Some((&[Text("{{content}}<|eot_id|>")], ToolFormat::Llama3)),
            observation: Some(&[Text(
                "<|start_header_id|>ipython<|end_header_id|>\n\n{{content}}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            )]),
            tools: Some(ToolFormat::Llama3),
            prefix: &[Bos],
            stop_words: &["<|eot_id|>", "<|eom_id|>"],
            replace_eos: true,
            ..Default::default()
        },
        Spec {
            name: "mistral",
            user: Some(&[Text("[INST] {{content}}[/INST]")]),
            assistant: Some(&[Text(" {{content}}"), Eos]),
            system: Some(SYSTEM_PARAGRAPH),
            function: Some((
                &[Text("[TOOL_CALLS] {{content}}"), Eos],
                ToolFormat::Mistral,
            )),
            observation: Some(&[Text(
                "[TOOL_RESULTS] {\"content\": {{content}}}[/TOOL_RESULTS]",
            )]),
            tools: Some(ToolFormat::Mistral),
            prefix: &[Bos],
            kind: Kind::Llama2,
            ..Default::default()
        },
        Spec {
            name: "phi",
            user: Some(&[Text("<|user|>\n{{content}}<|end|>\n<|assistant|>\n")]),
            assistant: Some(&[Text("{{content}}<|end|>\n")]),
            system: Some(&[Text("<|system|>\n{{content}}<|end|>\n")]),
            stop_words: &["<|end|>"],
            replace_eos: true,
            ..Default::default()
        },
        qwen(
            "qwen",
            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
            Kind::Plain,
        ),
        qwen("qwen3", "", Kind::Reasoning),
        qwen("qwen3_nothink", "", Kind::Plain),
        Spec {
            name: "vicuna",
            user: Some(&[Text("USER: {{content}} ASSISTANT:")]),
            default_system: "A chat between a curious user and an artificial intelligence assistant. \
                             The assistant gives helpful, detailed, and polite answers to the user's questions.",
            replace_jinja_template: true,
            ..Default::default()
        },
    ]
}

/// The names of every template here, sorted.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<_> = specs().into_iter().map(|s| s.name).collect();
    names.sort_unstable();
    names
}

/// The template LLaMA-Factory registers as `name`.
pub fn get(name: &str) -> Result<Template> {
    specs()
        .into_iter()
        .find(|s| s.name == name)
        .map(build)
        .ok_or_else(|| Error::UnknownTemplate {
            name: name.to_owned(),
            known: names().join(", "),
        })
}
