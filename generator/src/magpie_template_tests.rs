//! The pre-query text and stop markers of real chat templates, as their models ship them.

use super::*;

fn template(source: &str, bos: &str, eos: &str) -> ChatTemplate {
    ChatTemplate {
        source: source.to_string(),
        bos: Some(bos.to_string()),
        eos: Some(eos.to_string()),
    }
}

fn derive(source: &str, bos: &str, eos: &str, system: Option<&str>) -> MagpieTemplate {
    MagpieTemplate::derive(template(source, bos, eos), system, "model.gguf").expect("derives")
}

/// SmolLM2-Instruct's template (tokenizer_config.json of HuggingFaceTB/SmolLM2-135M-Instruct).
const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Qwen2-Instruct's template, with its default system prompt.
const QWEN2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Meta-Llama-3-Instruct's template.
const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/// Mistral-7B-Instruct-v0.2's template: no system role.
const MISTRAL: &str = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

/// Gemma-it's template: the assistant is `model`, no system role.
const GEMMA: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

/// The tiny fixtures' template (tests/fixtures/local/tiny-*/chat_template.jinja).
const FIXTURE: &str = include_str!("../../tests/fixtures/local/tiny-llama/chat_template.jinja");

#[test]
fn chatml_templates_give_their_default_system_prompt_or_the_one_given() {
    let smol = derive(SMOLLM2, "<|im_start|>", "<|im_end|>", None);
    assert_eq!(
        smol.pre_query,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n"
    );
    assert_eq!(smol.stops, ["<|im_end|>"]);
    let qwen = derive(QWEN2, "", "<|im_end|>", None);
    assert_eq!(
        qwen.pre_query,
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    );
    // --system replaces the default (magpie #3: a Chinese system prompt for Qwen).
    let zh = derive(
        QWEN2,
        "",
        "<|im_end|>",
        Some("你是一个乐于助人的中文助手。"),
    );
    assert_eq!(
        zh.pre_query,
        "<|im_start|>system\n你是一个乐于助人的中文助手。<|im_end|>\n<|im_start|>user\n"
    );
    assert_eq!(
        zh.answer_prompt("写一首诗").expect("renders"),
        "<|im_start|>system\n你是一个乐于助人的中文助手。<|im_end|>\n<|im_start|>user\n写一首诗<|im_end|>\n<|im_start|>assistant\n"
    );
    let tiny = derive(FIXTURE, "<|im_start|>", "<|im_end|>", None);
    assert_eq!(tiny.pre_query, "<|im_start|>user\n");
    assert_eq!(tiny.stops, ["<|im_end|>"]);
}

#[test]
fn llama3_mistral_and_gemma_templates_cut_at_their_own_markers() {
    let llama = derive(LLAMA3, "<|begin_of_text|>", "<|eot_id|>", None);
    assert_eq!(
        llama.pre_query,
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    );
    assert_eq!(llama.stops, ["<|eot_id|>"]);
    let sys = derive(LLAMA3, "<|begin_of_text|>", "<|eot_id|>", Some("Be terse."));
    assert_eq!(
        sys.pre_query,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
    );
    let mistral = derive(MISTRAL, "<s>", "</s>", None);
    assert_eq!(mistral.pre_query, "<s>[INST] ");
    assert_eq!(mistral.stops, ["[/INST]", "</s>"]);
    assert_eq!(
        mistral.answer_prompt("Name a fruit.").expect("renders"),
        "<s>[INST] Name a fruit. [/INST]"
    );
    let gemma = derive(GEMMA, "<bos>", "<eos>", None);
    assert_eq!(gemma.pre_query, "<bos><start_of_turn>user\n");
    assert_eq!(gemma.stops, ["<end_of_turn>"]);
}

#[test]
fn a_template_that_refuses_the_system_prompt_or_never_writes_the_user_is_refused() {
    let err = MagpieTemplate::derive(
        template(MISTRAL, "<s>", "</s>"),
        Some("Be terse."),
        "mistral/tokenizer_config.json",
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "mistral/tokenizer_config.json: the chat template cannot render a user's turn: "
        ),
        "{err}"
    );
    let silent = "{% for m in messages %}<|{{ m.role }}|>{% endfor %}";
    let err = MagpieTemplate::derive(template(silent, "", ""), None, "x.gguf").unwrap_err();
    assert_eq!(
        err.to_string(),
        "x.gguf: the chat template does not write the user's message once and as it is (the message appears 0 times), so the text before a user's turn cannot be told"
    );
    let twice = "{% for m in messages %}{{ m.content }}|{{ m.content }}{% endfor %}";
    let err = MagpieTemplate::derive(template(twice, "", ""), None, "x.gguf").unwrap_err();
    assert!(err.to_string().contains("appears 2 times"), "{err}");
    // Content rewritten: an empty turn is not the text around the user's message.
    let rewrites = "{% for m in messages %}{% if m.content %}[{{ m.content }}]{% else %}(none){% endif %}{% endfor %}";
    let err = MagpieTemplate::derive(template(rewrites, "", ""), None, "x.gguf").unwrap_err();
    assert!(
        err.to_string().contains("an empty message changes"),
        "{err}"
    );
}
