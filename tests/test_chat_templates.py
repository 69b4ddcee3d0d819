"""Tests for modelkit.chat_templates: template detection, shipped data, Go template checks."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelkit import chat_templates
from modelkit.chat_templates import (
    DetectedTemplate,
    detect_template,
    known_templates,
    load_template,
)
from modelkit.errors import TemplateError
from modelkit.gotemplate import validate_go_template


def go_json(obj: object) -> bytes:
    """Encode like Go's encoding/json: sorted keys, compact, HTML-safe escapes, newline."""
    text = json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return (text + "\n").encode()


# =============================================================================================
# Shipped data
# =============================================================================================

FAMILIES = known_templates()

#: The phi-3 template as it appears in Ollama's create test (a Phi-3.5 chat template).
PHI35_VECTOR = (
    "{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + "
    "message['content'] + '<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


def test_family_list() -> None:
    required = {"chatml", "llama3-instruct", "gemma-instruct", "mistral-instruct", "phi-3"}
    assert required <= set(FAMILIES)
    assert len(FAMILIES) == len(set(FAMILIES)) == 19


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_loads_and_is_valid_go(name: str) -> None:
    detected = load_template(name)
    assert isinstance(detected, DetectedTemplate)
    assert detected.name == name
    validate_go_template(detected.template)
    # Both the .Messages form and the legacy .System/.Prompt/.Response form.
    for field in (".Messages", ".Role", ".Content", ".System", ".Prompt", ".Response"):
        assert field in detected.template, field
    assert "\r" not in detected.template
    assert detected.parameters is not None
    assert list(detected.parameters) == ["stop"]
    stops = detected.parameters["stop"]
    assert stops and all(isinstance(s, str) and s for s in stops)


@pytest.mark.parametrize("name", FAMILIES)
def test_data_files_are_package_resources(name: str) -> None:
    folder = importlib.resources.files("modelkit") / "templates"
    assert (folder / f"{name}.gotmpl").is_file()
    assert (folder / f"{name}.json").is_file()
    assert (folder / "reference-jinja.json").is_file()


def test_reference_jinja_covers_every_family() -> None:
    names = [name for name, _ in chat_templates._references()]
    assert set(names) == set(FAMILIES)
    # File order follows the family order, which decides edit-distance ties.
    assert names == sorted(names, key=FAMILIES.index)


def test_load_template_unknown() -> None:
    with pytest.raises(KeyError):
        load_template("no-such-family")


def test_parameters_are_fresh_copies() -> None:
    first = load_template("chatml")
    assert first.parameters is not None
    first.parameters["stop"].append("mutated")
    assert "mutated" not in (load_template("chatml").parameters or {}).get("stop", [])


def test_phi3_params_blob_digest() -> None:
    detected = load_template("phi-3")
    assert detected.parameters == {"stop": ["<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]}
    blob = go_json(detected.parameters)
    assert blob == (b'{"stop":["\\u003c|end|\\u003e","\\u003c|system|\\u003e",'
                    b'"\\u003c|user|\\u003e","\\u003c|assistant|\\u003e"]}\n')
    digest = hashlib.sha256(blob).hexdigest()
    assert digest.startswith("0d79f567")
    assert digest == "0d79f567714c62c048378f2107fb332dabee0135d080c302d884317da9433cc5"


def test_phi3_create_vector_is_detected() -> None:
    detected = detect_template(PHI35_VECTOR)
    assert detected is not None
    assert detected.name == "phi-3"
    assert hashlib.sha256(go_json(detected.parameters)).hexdigest().startswith("0d79f567")


STOPS = {
    "chatml": ["<|im_start|>", "<|im_end|>"],
    "llama3-instruct": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "gemma-instruct": ["<start_of_turn>", "<end_of_turn>"],
    "gemma3-instruct": ["<end_of_turn>"],
    "mistral-instruct": ["[INST]", "[/INST]"],
    "llama2-chat": ["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"],
    "zephyr": ["<|system|>", "</s>", "<|user|>", "<|assistant|>"],
    "command-r": ["<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>"],
}


@pytest.mark.parametrize("name", sorted(STOPS))
def test_stop_tokens(name: str) -> None:
    assert load_template(name).parameters == {"stop": STOPS[name]}


# =============================================================================================
# Detection
# =============================================================================================

# --- the published templates of each family ------------------------------------------------

CHATML_OPENHERMES = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
    "supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant"
    "/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = "
    "'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + "
    "'\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if "
    "add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/"
    "assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}"
)
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role']"
    " == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must "
    "alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and "
    "system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n'"
    " + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif"
    " message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)
PHI3_MINI = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}"
    "{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}"
    "{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '\n'}}"
    "{% endif %}{% endfor %}"
)
ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
    "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' +"
    " message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and "
    "add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
COMMAND_R = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% if system_message != false %}"
    "{{ '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' + system_message + '<|END_OF_TURN_TOKEN|>' }}"
    "{% endif %}{% for message in loop_messages %}{% set content = message['content'] %}"
    "{% if message['role'] == 'user' %}{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' + "
    "content.strip() + '<|END_OF_TURN_TOKEN|>' }}{% elif message['role'] == 'assistant' %}"
    "{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>'  + content.strip() + '<|END_OF_TURN_TOKEN|>' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{% endif %}"
)
OPENCHAT = (
    "{{ bos_token }}{% for message in messages %}{{ 'GPT4 Correct ' + message['role'].title() + "
    "': ' + message['content'] + '<|end_of_turn|>'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ 'GPT4 Correct Assistant:' }}{% endif %}"
)
CHATQA = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{% set loop_messages = messages[1:] "
    "%}{%- else -%}{% set loop_messages = messages %}{% endif %}System: This is a chat between a "
    "user and an artificial intelligence assistant. The assistant gives helpful, detailed, and "
    "polite answers to the user's questions based on the context. The assistant should also "
    "indicate when the answer cannot be found in the context.\n\n{% for message in loop_messages "
    "%}{%- if message['role'] == 'user' -%}User: {{ message['content'].strip() + '\n\n' }}{%- else"
    " -%}Assistant: {{ message['content'].strip() + '\n\n' }}{%- endif %}{% if loop.last and "
    "message['role'] == 'user' %}Assistant:{% endif %}{% endfor %}"
)
GRANITE_CODE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ 'Question:\n' + "
    "message['content'] + '\n\n' }}{% elif message['role'] == 'system' %}\n{{ 'System:\n' + "
    "message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}{{ 'Answer:\n'  + "
    "message['content'] + '\n\n' }}{% endif %}\n{% if loop.last and add_generation_prompt %}\n"
    "{{ 'Answer:\n' }}{% endif %}{% endfor %}"
)
FALCON = (
    "{% for message in messages %}{% if not loop.first %}{{ '\n' }}{% endif %}{% if "
    "message['role'] == 'system' %}{{ 'System: ' }}{% elif message['role'] == 'user' %}"
    "{{ 'User: ' }}{% elif message['role'] == 'assistant' %}{{ 'Falcon: ' }}{% endif %}"
    "{{ message['content'] }}{% endfor %}{% if add_generation_prompt %}{{ '\n' + 'Falcon:' }}"
    "{% endif %}"
)
SOLAR = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{% if message['content']%}"
    "{{'### System:\n' + message['content']+'\n\n'}}{% endif %}{% elif message['role'] == 'user' %}"
    "{{'### User:\n' + message['content']+'\n\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'### Assistant:\n'  + message['content']}}{% endif %}{% if loop.last and "
    "add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}{% endfor %}"
)
ALFRED = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<start_user>' + "
    "message['content'].strip() + '<end_message>' }}{% elif message['role'] == 'system' %}"
    "{{ '<start_system>' + message['content'].strip() + '<end_message>' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<start_assistant>'  + message['content'] + "
    "'<end_message>' }}{% else %}"
    "{{ raise_exception('Only system, user and assistant roles are supported.') }}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<start_assistant>' }}{% endif %}{% endfor %}"
)
CODELLAMA_70B = (
    "{% if messages[0]['role'] == 'system' %}{% set user_index = 1 %}{% else %}{% set user_index ="
    " 0 %}{% endif %}{% for message in messages %}{% if loop.index0 == 0 %}{{ '<s>' }}{% endif %}"
    "{% set content = 'Source: ' + message['role'] + '\n\n ' + message['content'] | trim %}"
    "{{ content + ' <step> ' }}{% endfor %}{{'Source: assistant\nDestination: user\n\n '}}"
)
CODER_PREAMBLE = (
    "{{bos_token}}{{'You are an exceptionally intelligent coding assistant that consistently "
    "delivers accurate and reliable responses to user instructions.\n\n'}}\n{%- for message in "
    "messages %}\n    {%- if message['role'] == 'system' %}\n        {{ raise_exception('System "
    "messages are not allowed in this template.') }}\n    {%- else %}\n        {%- if "
    "message['role'] == 'user' %}\n{{'@@ Instruction\n' + message['content'] + '\n\n'}}\n        "
    "{%- else %}\n{{'@@ Response\n' + message['content'] + eos_token + '\n\n'}}\n        "
    "{%- endif %}\n    {%- endif %}\n{%- endfor %}\n{{'@@ Response\n'}}"
)
MAGICODER = CODER_PREAMBLE
STARCODER2 = CODER_PREAMBLE.replace("@@ ", "### ")
DEEPSEEK_CODER = (
    "{% if not add_generation_prompt is defined %}\n{% set add_generation_prompt = false %}\n"
    "{% endif %}\n{%- set ns = namespace(found=false) -%}\n{%- for message in messages -%}\n    "
    "{%- if message['role'] == 'system' -%}\n        {%- set ns.found = true -%}\n    {%- endif -%}"
    "\n{%- endfor -%}\n{{bos_token}}{%- if not ns.found -%}\n{{'You are an AI programming "
    "assistant, utilizing the DeepSeek Coder model, and you only answer questions related to "
    "computer science.\\n'}}\n{%- endif %}\n{%- for message in messages %}\n    {%- if "
    "message['role'] == 'system' %}\n{{ message['content'] }}\n    {%- else %}\n        {%- if "
    "message['role'] == 'user' %}\n{{'### Instruction:\\n' + message['content'] + '\\n'}}\n"
    "        {%- else %}\n{{'### Response:\\n' + message['content'] + '\\n<|EOT|>\\n'}}\n"
    "        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{% if add_generation_prompt %}\n"
    "{{'### Response:'}}\n{% endif %}"
)

# --- fine-tunes and newer releases: altered templates of the same families --------------------

QWEN25_TOOLS = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nReturn each call inside <tool_call></tool_call> XML tags.<|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- for tool_call in message.tool_calls %}
            {{- '\n<tool_call>\n{"name": "' + tool_call.function.name + '", "arguments": ' }}
            {{- tool_call.function.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {{- '<|im_start|>user\n<tool_response>\n' + message.content + '\n</tool_response><|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""  # noqa: E501
CHATML_DOLPHIN = (  # a fine-tune that only changed the default system prompt
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
    "{% endif %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are Dolphin, an uncensored and unbiased AI assistant.<|im_end|>"
    "\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA31_TOOLS = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", "parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {{- message.content | tojson }}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""  # noqa: E501
LLAMA3_DEFAULT_SYSTEM = (
    "{% set loop_messages = messages %}{% if messages[0]['role'] != 'system' %}{{ bos_token + "
    "'<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful, smart, kind, and efficient "
    "AI assistant. You always fulfill the user\\'s requests to the best of your ability.<|eot_id|>'"
    " }}{% endif %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
GEMMA_WITH_SYSTEM = (  # fine-tune that folds the system prompt into the first user turn
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] "
    "+ '\n\n' %}{% set loop_messages = messages[1:] %}{% else %}{% set system = '' %}{% set "
    "loop_messages = messages %}{% endif %}{% for message in loop_messages %}{% if "
    "(message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = "
    "message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + (system if loop.first else "
    "'') + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt"
    " %}{{'<start_of_turn>model\n'}}{% endif %}"
)
GEMMA3_COMPACT = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = "
    "messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}"
    "{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}{%- set role = 'model' if message['role'] == 'assistant' "
    "else message['role'] -%}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if "
    "loop.first else '') }}{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}{%- if item['type'] == 'image' -%}"
    "{{ '<start_of_image>' }}{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}{{ '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}"
)
MISTRAL_V03_TOOLS = r"""{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {%- for tool in tools %}
                {{- tool | tojson }}
                {%- if not loop.last %}{{- ", " }}{%- endif %}
            {%- endfor %}
            {{- "][/AVAILABLE_TOOLS]" }}
        {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\n\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] " + message.tool_calls | tojson + eos_token }}
    {%- elif message["role"] == "tool" %}
        {{- '[TOOL_RESULTS] {"content": ' + message.content|string + '}[/TOOL_RESULTS]' }}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported!") }}
    {%- endif %}
{%- endfor %}
"""
MISTRAL_V7 = (
    "{{- bos_token }}{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{{- '[SYSTEM_PROMPT]' + message['content'] + '[/SYSTEM_PROMPT]' }}{%- elif message['role'] =="
    " 'user' %}{{- '[INST]' + message['content'] + '[/INST]' }}{%- elif message['role'] == "
    "'assistant' %}{{- message['content'] + eos_token }}{%- endif %}{%- endfor %}"
)
MISTRAL_SYSTEM_FOLDED = (  # v0.2 community variant that accepts a system message
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system_message = "
    "messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}{% else %}"
    "{% set system_message = '' %}{% set loop_messages = messages %}{% endif %}{% for message in "
    "loop_messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + (system_message if "
    "loop.first else '') + message['content'] + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
LLAMA2_DEFAULT_SYSTEM = LLAMA2.replace(
    "{% set system_message = false %}",
    "{% set system_message = 'You are a helpful, respectful and honest assistant. Always answer "
    "as helpfully as possible, while being safe. Your answers should not include any harmful, "
    "unethical, racist, sexist, toxic, dangerous, or illegal content.' %}",
)
PHI3_WITH_SYSTEM = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + "
    "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + "
    "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
PHI4_MINI_TOOLS = (
    "{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message and "
    "message['tools'] is not none %}{{ '<|' + message['role'] + '|>' + message['content'] + "
    "'<|tool|>' + message['tools'] + '<|/tool|>' + '<|end|>' }}{% else %}{{ '<|' + "
    "message['role'] + '|>' + message['content'] + '<|end|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)
ZEPHYR_NO_SYSTEM = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
    "message['content'] }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + "
    "message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}"
    "\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
COMMAND_R_TOOLS = (
    "{{ bos_token }}{% if documents %}{% set system_message = 'You are Command-R. ' + "
    "'Use the documents below to answer.' %}{% endif %}{{ '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>'"
    " + '# Safety Preamble\nThe instructions in this section override those in the task "
    "description and style guide sections.\n\n# System Preamble\n## Basic Rules\nYou are a "
    "powerful conversational AI trained by Cohere to help people.' + '<|END_OF_TURN_TOKEN|>' }}"
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|START_OF_TURN_TOKEN|>"
    "<|USER_TOKEN|>' + message['content'] + '<|END_OF_TURN_TOKEN|>' }}{% elif message['role'] == "
    "'system' %}{{ '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' + message['content'] + "
    "'<|END_OF_TURN_TOKEN|>' }}{% elif message['role'] == 'assistant' %}"
    "{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>'  + message['content'] + '<|END_OF_TURN_TOKEN|>'"
    " }}{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{% endif %}"
)

POSITIVES = [
    ("chatml-openhermes", CHATML_OPENHERMES, "chatml"),
    ("chatml-qwen2", CHATML_QWEN2, "chatml"),
    ("chatml-qwen2.5-tools", QWEN25_TOOLS, "chatml"),
    ("chatml-dolphin", CHATML_DOLPHIN, "chatml"),
    ("chatml-crlf", CHATML_OPENHERMES.replace("\n", "\r\n"), "chatml"),
    ("llama3", LLAMA3, "llama3-instruct"),
    ("llama3-default-system", LLAMA3_DEFAULT_SYSTEM, "llama3-instruct"),
    ("llama3.1-tools", LLAMA31_TOOLS, "llama3-instruct"),
    ("gemma", GEMMA, "gemma-instruct"),
    ("gemma-with-system", GEMMA_WITH_SYSTEM, "gemma-instruct"),
    ("gemma3", dict(chat_templates._references())["gemma3-instruct"], "gemma3-instruct"),
    ("gemma3-compact", GEMMA3_COMPACT, "gemma3-instruct"),
    ("mistral", MISTRAL, "mistral-instruct"),
    ("mistral-trailing-space", MISTRAL.replace("eos_token}}", "eos_token + ' '}}"),
     "mistral-instruct"),
    ("mistral-system-folded", MISTRAL_SYSTEM_FOLDED, "mistral-instruct"),
    ("mistral-v0.3-tools", MISTRAL_V03_TOOLS, "mistral-instruct"),
    ("mistral-v7", MISTRAL_V7, "mistral-instruct"),
    ("llama2", LLAMA2, "llama2-chat"),
    ("llama2-default-system", LLAMA2_DEFAULT_SYSTEM, "llama2-chat"),
    ("phi-3-mini", PHI3_MINI, "phi-3"),
    ("phi-3-medium", PHI3_MINI.replace("{{ bos_token }}", ""), "phi-3"),
    ("phi-3.5", PHI35_VECTOR, "phi-3"),
    ("phi-3-with-system", PHI3_WITH_SYSTEM, "phi-3"),
    ("phi-4-mini-tools", PHI4_MINI_TOOLS, "phi-3"),
    ("zephyr", ZEPHYR, "zephyr"),
    ("zephyr-no-system", ZEPHYR_NO_SYSTEM, "zephyr"),
    ("command-r", COMMAND_R, "command-r"),
    ("command-r-tools", COMMAND_R_TOOLS, "command-r"),
    ("openchat", OPENCHAT, "openchat"),
    ("chatqa", CHATQA, "chatqa"),
    ("chatqa-edited", CHATQA.replace("The assistant gives", "The assistant always gives"),
     "chatqa"),
    ("granite-code", GRANITE_CODE, "granite-instruct"),
    ("falcon", FALCON, "falcon-instruct"),
    ("solar", SOLAR, "solar-instruct"),
    ("alfred", ALFRED, "alfred"),
    ("codellama-70b", CODELLAMA_70B, "codellama-70b-instruct"),
    ("magicoder", MAGICODER, "magicoder"),
    ("starcoder2", STARCODER2, "starcoder2-instruct"),
    ("deepseek-coder", DEEPSEEK_CODER, "alpaca"),
]

# --- templates of other prompt formats: nothing must be detected -------------------------------

NEGATIVES = [
    ("empty", ""),
    ("plain-text", "Just some text without any template syntax."),
    ("concatenate", "{% for message in messages %}{{ message['content'] }}{% endfor %}"),
    # 47 edits from the ChatML reference, but it has none of ChatML's tokens.
    ("generic-role-colon",
     "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\n' }}"
     "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"),
    ("vicuna",
     "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\n\n' }}{% set "
     "loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
     "{% for message in loop_messages %}{% if message['role'] == 'user' %}{{ 'USER: ' + "
     "message['content'] + '\n' }}{% elif message['role'] == 'assistant' %}{{ 'ASSISTANT: ' + "
     "message['content'] + eos_token + '\n' }}{% endif %}{% endfor %}{% if add_generation_prompt "
     "%}{{ 'ASSISTANT:' }}{% endif %}"),
    ("llama4",
     "{{- bos_token }}{%- for message in messages %}{{- '<|header_start|>' + message['role'] + "
     "'<|header_end|>\n\n' }}{{- message['content'] | trim }}{{- '<|eot|>' }}{%- endfor %}"
     "{%- if add_generation_prompt %}{{- '<|header_start|>assistant<|header_end|>\n\n' }}"
     "{%- endif %}"),
    ("phi-4",
     "{% for message in messages %}{% if (message['role'] == 'system') %}{{'<|im_start|>system"
     "<|im_sep|>' + message['content'] + '<|im_end|>'}}{% elif (message['role'] == 'user') %}"
     "{{'<|im_start|>user<|im_sep|>' + message['content'] + '<|im_end|>'}}{% elif "
     "(message['role'] == 'assistant') %}{{'<|im_start|>assistant<|im_sep|>' + "
     "message['content'] + '<|im_end|>'}}{% endif %}{% endfor %}{% if add_generation_prompt %}"
     "{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}"),
    ("granite-3",
     "{%- for message in messages %}{{- '<|start_of_role|>' + message['role'] + "
     "'<|end_of_role|>' + message['content'] + '<|end_of_text|>\n' }}{%- endfor %}"
     "{%- if add_generation_prompt %}{{- '<|start_of_role|>assistant<|end_of_role|>' }}"
     "{%- endif %}"),
    ("deepseek-v3",
     "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
     "{% endif %}{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
     "{{ '<\uff5cUser\uff5c>' + message['content'] }}{% elif message['role'] == 'assistant' %}"
     "{{ '<\uff5cAssistant\uff5c>' + message['content'] + '<\uff5cend\u2581of\u2581sentence"
     "\uff5c>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}"
     "{{ '<\uff5cAssistant\uff5c>' }}{% endif %}"),
    ("glm-4",
     "[gMASK]<sop>{% for item in messages %}{% if item['role'] == 'system' %}<|system|>\n"
     "{{ item['content'] }}{% elif item['role'] == 'user' %}<|user|>\n{{ item['content'] }}"
     "{% elif item['role'] == 'assistant' %}<|assistant|>\n{{ item['content'] }}{% elif "
     "item['role'] == 'observation' %}<|observation|>\n{{ item['content'] }}{% endif %}"
     "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"),
    ("harmony",
     "{%- for message in messages %}{{- '<|start|>' + message['role'] + '<|message|>' + "
     "message['content'] + '<|end|>' }}{%- endfor %}{%- if add_generation_prompt %}"
     "<|start|>assistant{%- endif %}"),
    ("two-formats",  # markers of two families: ambiguous
     "{% if format == 'chatml' %}{{ '<|im_start|>user\n' + content + '<|im_end|>' }}{% else %}"
     "{{ '<|start_header_id|>user<|end_header_id|>\n\n' + content + '<|eot_id|>' }}{% endif %}"),
]


@pytest.mark.parametrize(("jinja", "expected"), [(j, e) for _, j, e in POSITIVES],
                         ids=[i for i, _, _ in POSITIVES])
def test_detects_family(jinja: str, expected: str) -> None:
    detected = detect_template(jinja)
    assert detected is not None, "nothing detected"
    assert detected.name == expected
    assert detected == load_template(expected)


@pytest.mark.parametrize("jinja", [j for _, j in NEGATIVES], ids=[i for i, _ in NEGATIVES])
def test_detects_nothing(jinja: str) -> None:
    assert detect_template(jinja) is None


@pytest.mark.parametrize(("name", "jinja"), chat_templates._references())
def test_every_reference_detects_its_family(name: str, jinja: str) -> None:
    detected = detect_template(jinja)
    assert detected is not None and detected.name == name


#: Formats that differ only by one marker (e.g. Gemma 3 adds <start_of_image> to Gemma's).
SIBLINGS = {
    "gemma3-instruct": {"gemma-instruct"},
    "llama2-chat": {"mistral-instruct"},
    "starcoder2-instruct": {"alpaca"},
    "alpaca": {"starcoder2-instruct"},
    "zephyr": {"phi-3"},
}


def test_small_edits_are_still_detected() -> None:
    rng = random.Random(1234)
    for name, jinja in chat_templates._references():
        for _ in range(5):
            edited = list(jinja)
            for _ in range(rng.randint(1, 60)):  # up to 60 random single-character edits
                i = rng.randrange(len(edited))
                op = rng.randrange(3)
                if op == 0:
                    del edited[i]
                elif op == 1:
                    edited.insert(i, rng.choice("abc{}% '\n"))
                else:
                    edited[i] = rng.choice("xyz ")
            detected = detect_template("".join(edited))
            # Edits may destroy a family marker, then detection may rightly decline, or fall
            # back to a sibling format; it must never name an unrelated family.
            assert detected is None or detected.name in {name} | SIBLINGS.get(name, set())


def test_edit_distance_is_the_primary_rule() -> None:
    # 60 characters of noise keep it within reach of the reference (< 100 edits)...
    noisy = CHATQA + "x" * 60
    assert chat_templates._nearest_reference(noisy) == "chatqa"
    assert detect_template(noisy) is not None
    # ...but 100 do not, and chatqa has no markers of its own.
    assert detect_template(CHATQA + "x" * 100) is None


def _levenshtein_reference(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def test_levenshtein() -> None:
    rng = random.Random(7)
    assert chat_templates._levenshtein("", "") == 0
    assert chat_templates._levenshtein("kitten", "sitting") == 3
    assert chat_templates._levenshtein("", "abc") == 3
    assert chat_templates._levenshtein("\U0001f600b", "b") == 1  # counted in code points
    for _ in range(300):
        a = "".join(rng.choice("ab<|>é") for _ in range(rng.randint(0, 90)))
        b = "".join(rng.choice("ab<|>é") for _ in range(rng.randint(0, 90)))
        assert chat_templates._levenshtein(a, b) == _levenshtein_reference(a, b)


def test_detection_works_on_long_templates() -> None:
    # How long it takes is measured by bench/chat_templates.py, not here.
    long_template = QWEN25_TOOLS * 40  # ~100 kB
    assert detect_template(long_template) is not None


# =============================================================================================
# Go text/template validation
# =============================================================================================

INVALID = [
    ("{{ .Prompt", "template: :1: unclosed action"),
    ("{{ if .System }}x", "template: :1: unexpected EOF"),
    ("{{ end }}", "template: :1: unexpected {{end}}"),
    ("{{ else }}", "template: :1: unexpected {{else}}"),
    ("{{ foo }}", 'template: :1: function "foo" not defined'),
    ("{{ toJson .Tools }}", 'template: :1: function "toJson" not defined'),
    ("{{ .Prompt }", 'template: :1: unexpected "}" in operand'),
    ("{{ .Prompt\n", "template: :2: unclosed action started at :1"),
    ("<|user|>\n{{ .Prompt }}<|end|>\n{{ if .Response }}\n{{ .Response }}",
     "template: :4: unexpected EOF"),
    ("{{ range .Messages }}{{ .Content }}", "template: :1: unexpected EOF"),
    ("{{ with .Tools }}{{ . }}", "template: :1: unexpected EOF"),
    ('{{ define "x" }}a', "template: :1: unexpected EOF"),
    ('{{ block "x" . }}a{{ else }}b{{ end }}', "template: :1: unexpected {{else}} in block clause"),
    ("{{ if .A }}a{{ else }}b{{ else }}c{{ end }}", "template: :1: expected end; found {{else}}"),
    ("{{ range .A }}a{{ else if .B }}b{{ end }}", "template: :1: unexpected <if> in input"),
    ("{{ if .A }}a{{ else with .B }}b{{ end }}", "template: :1: unexpected <with> in input"),
    ("{{/* unclosed", "template: :1: unclosed comment"),
    ("{{/* c */ .X }}", "template: :1: comment ends before closing delimiter"),
    ('{{ "abc }}', "template: :1: unterminated quoted string"),
    ("{{ `abc }}", "template: :1: unterminated raw quoted string"),
    ("{{ 'a }}", "template: :1: unterminated character constant"),
    ("{{ 'ab' }}", "template: :1: malformed character constant: 'ab'"),
    ("{{ $x }}", 'template: :1: undefined variable "$x"'),
    ("{{ range .M }}{{ $i := 1 }}{{ end }}{{ $i }}", 'template: :1: undefined variable "$i"'),
    ("{{ break }}", "template: :1: {{break}} outside {{range}}"),
    ("{{ range .M }}{{ else }}{{ continue }}{{ end }}",
     "template: :1: {{continue}} outside {{range}}"),
    ("{{ (.X }}", "template: :1: unclosed left paren"),
    ("{{ .X) }}", "template: :1: unexpected right paren"),
    ("{{ 3x }}", 'template: :1: bad number syntax: "3x"'),
    ("{{ .X | 1 }}", "template: :1: non executable command in pipeline stage 2"),
    ("{{ }}", "template: :1: missing value for command"),
    ("{{ if }}{{ end }}", "template: :1: missing value for if"),
    ("{{ .X | }}{{ | .Y }}", 'template: :1: unexpected "|" in command'),
    ("{{ range $i, $e, $f := .X }}{{ end }}", "template: :1: too many declarations in range"),
    ("{{ range $i, 1 }}{{ end }}", "template: :1: range can only initialize variables"),
    ('{{ "\\q" }}', "template: :1: invalid syntax"),
    ("{{ 99999999999999999999 }}", 'template: :1: integer overflow: "99999999999999999999"'),
    ("{{ 1__0 }}", 'template: :1: illegal number syntax: "1__0"'),
    ("{{ .Messages.0 }}", 'template: :1: unexpected ".0" in operand'),
    ("{{ $x=1 }}", "template: :1: bad character U+003D '='"),
    ("{{ .X := 1 }}", 'template: :1: unexpected ":=" in operand'),
    ('{{ "x".Y }}', 'template: :1: unexpected . after term "\\"x\\""'),
    ('{{ define "a" }}x{{ end }}{{ define "a" }}y{{ end }}',
     'template: :1: template: multiple definition of template "a"'),
    ('{{ if .X }}{{ define "a" }}x{{ end }}{{ end }}',
     "template: :1: unexpected <define> in command"),
    ("{{ template .Name }}", 'template: :1: unexpected ".Name" in template clause'),
    ('{{ template "x" }}', "undefined template specified"),
    ('{{ define "x" }}{{ template "y" }}{{ end }}{{ template "x" . }}',
     "undefined template specified"),
    ("{{ .X \u00a7 }}", "template: :1: unrecognized character in action: U+00A7 '\u00a7'"),
    ("{{ .X }}{{- .Y", "template: :1: unclosed action"),
    ("a\nb\n{{ if .X }}\n{{ end }}\n{{ end }}", "template: :5: unexpected {{end}}"),
]


@pytest.mark.parametrize(("text", "message"), INVALID, ids=[t for t, _ in INVALID])
def test_invalid_go_templates(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        validate_go_template(text)
    assert str(info.value) == f"template error: {message}"


LLAMA31_STYLE_GO = """\
{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>
{{- if .System }}

{{ .System }}
{{- end }}
{{- if .Tools }}

Today is {{ currentDate }}. You can call these functions:
{{- range .Tools }}
{{ json . }}
{{- end }}
{{- end }}<|eot_id|>
{{- end }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "parameters": {{ json .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}
{{- if and $last (ne .Role "assistant") }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}"""  # noqa: E501

TYPESCRIPT_TOOLS_GO = """\
{{- range .Tools }}
type {{ .Function.Name }} = (_: {
{{- range $name, $p := .Function.Parameters.Properties }}
  {{ $name }}: {{ toTypeScriptType $p }},
{{- end }}
}) => any;
{{- end }}
Yesterday was {{ yesterdayDate }}."""

VALID = [
    ("prompt-only", "{{ .Prompt }}"),
    ("system-prompt", "{{ .System }} {{ .Prompt }}"),
    ("empty", ""),
    ("no-actions", "Plain text with { braces } and }} closers."),
    ("legacy-phi3",
     "{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}{{ if .Prompt }}<|user|>\n"
     "{{ .Prompt }}<|end|>\n{{ end }}<|assistant|>\n{{ .Response }}<|end|>"),
    ("llama3.1-style-tools", LLAMA31_STYLE_GO),
    ("typescript-tools", TYPESCRIPT_TOOLS_GO),
    ("fim", "{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>{{- else }}"
            "{{ .Prompt }}{{- end }}"),
    ("comments", "{{/* a comment */}}{{- /* trimmed, with }} inside */ -}}\n{{ .Prompt }}"),
    ("literals-with-braces", '{{ "}}" }}{{ `raw }}\nwith newline` }}{{ \'}\' }}'
                             '{{ printf "%s}}" .X }}'),
    ("numbers", "{{ if gt (len .Messages) 0x10 }}{{ end }}{{ printf \"%.2f\" 1.5e3 }}{{ 'a' }}"
                "{{ -1 }}{{ 1_000 }}{{ 0o17 }}{{ 0b101 }}{{ 1i }}{{ 1+2i }}{{ 0x1p-2 }}"),
    ("define-template-block", '{{ define "sys" }}<<SYS>>{{ . }}<</SYS>>{{ end }}'
                              '{{ template "sys" .System }}{{ block "b" . }}x{{ end }}'),
    ("else-with", "{{ with .System }}{{ . }}{{ else with .Prompt }}{{ . }}{{ else }}-{{ end }}"),
    ("break-continue", "{{ range $i, $e := .Messages }}{{ if eq $i 3 }}{{ break }}{{ end }}"
                       "{{ if not $e.Content }}{{ continue }}{{ end }}{{ $e.Role }}{{ end }}"),
    ("assignment", "{{ $s := \"\" }}{{ range .Messages }}{{ $s = printf \"%s%s\" $s .Content }}"
                   "{{ end }}{{ $s }}"),
    ("builtins", "{{ html .X }}{{ js .X }}{{ urlquery .X }}{{ call .F }}{{ println }}"
                 "{{ index .M 0 }}{{ (index .Messages 0).Content }}{{ and .A .B | not }}"
                 "{{ or .A .B }}{{ le 1 2 }}{{ ge 2 1 }}{{ lt 1 2 }}{{ print nil true }}"),
    ("pipe-trailing", "{{ .X | }}"),
    ("unicode", "{{ .Prompt }} \u2014 \u00fcn\u00efc\u00f6d\u00e9 \U0001f600 {{ \"\u00fc\" }}"
                "{{ $\u00e9t\u00e9 := 1 }}{{ $\u00e9t\u00e9 }}"),
    ("trim-markers", "a  {{- .X -}}  b\n{{- if .Y }}\n  c\n{{- end -}}\n"),
    ("multiline-action", "{{ if and\n    .System\n    .Prompt }}x{{ end }}"),
]


@pytest.mark.parametrize("text", [t for _, t in VALID], ids=[i for i, _ in VALID])
def test_valid_go_templates(text: str) -> None:
    validate_go_template(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=list("{}-/*|$.()\"'` \nxif endrangwth:=,0123456789"), max_size=60))
def test_validator_never_crashes(text: str) -> None:
    try:
        validate_go_template(text)
    except TemplateError as err:
        assert str(err).startswith("template error: ")


# =============================================================================================
# Cross-checks with a real Go toolchain (skipped when `go` is not installed)
# =============================================================================================

GO_HARNESS = r"""
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
	"text/template/parse"
)

type msg struct{ Role, Content string }

type request struct {
	Op       string `json:"op"`
	Text     string `json:"text"`
	Messages []msg  `json:"messages"`
	Legacy   bool   `json:"legacy"`
}

var funcs = template.FuncMap{
	"json":             func(v any) string { b, _ := json.Marshal(v); return string(b) },
	"currentDate":      func(...string) string { return "2025-01-01" },
	"yesterdayDate":    func(...string) string { return "2024-12-31" },
	"toTypeScriptType": func(any) string { return "any" },
}

func bareTemplate(n parse.Node) bool {
	switch n := n.(type) {
	case *parse.ListNode:
		for _, c := range n.Nodes {
			if bareTemplate(c) {
				return true
			}
		}
	case *parse.TemplateNode:
		return n.Pipe == nil
	case *parse.IfNode:
		return bareTemplate(n.List) || (n.ElseList != nil && bareTemplate(n.ElseList))
	case *parse.RangeNode:
		return bareTemplate(n.List) || (n.ElseList != nil && bareTemplate(n.ElseList))
	case *parse.WithNode:
		return bareTemplate(n.List) || (n.ElseList != nil && bareTemplate(n.ElseList))
	}
	return false
}

func check(text string) string {
	t, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(text)
	if err != nil {
		return err.Error()
	}
	for _, tt := range t.Templates() {
		if tt.Tree != nil && bareTemplate(tt.Tree.Root) {
			return "undefined template specified"
		}
	}
	return "OK"
}

// cut drops everything after the first .Response field, as Ollama does for the last turn.
func cut(n parse.Node, done *bool) parse.Node {
	if f, ok := n.(*parse.FieldNode); ok && len(f.Ident) > 0 && f.Ident[0] == "Response" {
		*done = true
		return n
	}
	if *done {
		return nil
	}
	switch t := n.(type) {
	case *parse.ListNode:
		var keep []parse.Node
		for _, c := range t.Nodes {
			if r := cut(c, done); r != nil {
				keep = append(keep, r)
			}
		}
		t.Nodes = keep
	case *parse.IfNode:
		cutBranch(&t.BranchNode, done)
	case *parse.RangeNode:
		cutBranch(&t.BranchNode, done)
	case *parse.WithNode:
		cutBranch(&t.BranchNode, done)
	case *parse.ActionNode:
		for _, c := range t.Pipe.Cmds {
			for _, a := range c.Args {
				cut(a, done)
			}
		}
	}
	return n
}

func cutBranch(b *parse.BranchNode, done *bool) {
	cut(b.List, done)
	if b.ElseList != nil {
		cut(b.ElseList, done)
	}
}

func render(r request) (string, error) {
	t, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(r.Text)
	if err != nil {
		return "", err
	}
	var system []string
	var msgs []*msg
	for i := range r.Messages {
		m := r.Messages[i]
		if m.Role == "system" {
			system = append(system, m.Content)
		}
		if len(msgs) > 0 && msgs[len(msgs)-1].Role == m.Role {
			msgs[len(msgs)-1].Content += "\n\n" + m.Content
		} else {
			msgs = append(msgs, &m)
		}
	}
	var b strings.Builder
	if !r.Legacy {
		err := t.Execute(&b, map[string]any{"System": strings.Join(system, "\n\n"),
			"Messages": msgs, "Tools": nil, "Response": ""})
		return b.String(), err
	}
	sys, prompt, response := "", "", ""
	run := func(tt *template.Template) error {
		err := tt.Execute(&b, map[string]any{"System": sys, "Prompt": prompt, "Response": response})
		sys, prompt, response = "", "", ""
		return err
	}
	for _, m := range msgs {
		switch m.Role {
		case "system":
			if prompt != "" || response != "" {
				if err := run(t); err != nil {
					return "", err
				}
			}
			sys = m.Content
		case "user":
			if response != "" {
				if err := run(t); err != nil {
					return "", err
				}
			}
			prompt = m.Content
		case "assistant":
			response = m.Content
		}
	}
	done := false
	root := cut(t.Tree.Root.Copy(), &done).(*parse.ListNode)
	last, err := template.New("").Option("missingkey=zero").Funcs(funcs).AddParseTree(
		"", &parse.Tree{Root: root})
	if err != nil {
		return "", err
	}
	err = run(last)
	return b.String(), err
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<26)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		var r request
		if err := json.Unmarshal(in.Bytes(), &r); err != nil {
			panic(err)
		}
		var res string
		if r.Op == "check" {
			res = check(r.Text)
		} else if s, err := render(r); err != nil {
			res = "ERROR: " + err.Error()
		} else {
			res = s
		}
		b, _ := json.Marshal(res)
		fmt.Fprintln(out, string(b))
	}
}
"""


class GoHarness:
    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def run(self, requests: list[dict[str, object]]) -> list[str]:
        data = "".join(json.dumps(r) + "\n" for r in requests)
        proc = subprocess.run([str(self.binary)], input=data, capture_output=True, text=True,
                              check=True, timeout=120)
        return [json.loads(line) for line in proc.stdout.splitlines()]

    def check(self, texts: list[str]) -> list[str]:
        return self.run([{"op": "check", "text": t} for t in texts])


@pytest.fixture(scope="module")
def go_harness(tmp_path_factory: pytest.TempPathFactory) -> GoHarness:
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go toolchain is not installed")
    folder = tmp_path_factory.mktemp("goharness")
    (folder / "main.go").write_text(GO_HARNESS)
    env = dict(os.environ)
    env.setdefault("GOCACHE", str(folder / "cache"))
    env["GO111MODULE"] = "off"
    env["GOFLAGS"] = ""
    build = subprocess.run([go, "build", "-o", str(folder / "harness"), str(folder / "main.go")],
                           capture_output=True, text=True, env=env, timeout=600)
    if build.returncode != 0:
        pytest.skip(f"cannot build the Go harness: {build.stderr.strip()[:500]}")
    return GoHarness(folder / "harness")


def _python_result(text: str) -> str:
    try:
        validate_go_template(text)
    except TemplateError as err:
        return str(err).removeprefix("template error: ")
    return "OK"


def _mutations(texts: list[str], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    pieces = ["{{", "}}", "{{- ", " -}}", " ", "\n", "(", ")", "|", "$x", ":=", ".", "end",
              "else", "if ", "range ", '"', "'", "`", ",", "/*", "*/", "1", "-", "{{ end }}"]
    out = []
    for _ in range(count):
        s = rng.choice(texts)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(s) + 1)
            op = rng.randrange(3)
            if op == 0:
                s = s[:i] + s[i + rng.randint(1, 4):]
            elif op == 1:
                s = s[:i] + rng.choice(pieces) + s[i:]
            else:
                s = s[:i] + rng.choice(pieces) + s[i + 1:]
        out.append(s)
    return out


def test_validator_agrees_with_go(go_harness: GoHarness) -> None:
    shipped = [load_template(name).template for name in FAMILIES]
    texts = shipped + [t for t, _ in INVALID] + [t for _, t in VALID]
    texts += _mutations(shipped + [t for _, t in VALID], 3000, seed=99)
    go_results = go_harness.check(texts)
    # Toolchains before Go 1.23 lack {{else with}} and word some lexer errors differently;
    # with them only the verdicts (valid or not) are compared, not the messages.
    modern = go_harness.check(["{{with 1}}{{else with 2}}{{end}}"]) == ["OK"]
    mismatches = []
    for text, go_result in zip(texts, go_results, strict=True):
        if not modern and "else with" in text:
            continue
        ours = _python_result(text)
        same = ours == go_result if modern else (ours == "OK") == (go_result == "OK")
        if not same:
            mismatches.append((text, go_result, ours))
    assert not mismatches, mismatches[:5]


CONVERSATIONS = {
    "user": [{"Role": "user", "Content": "Hello, how are you?"}],
    "user-assistant-user": [
        {"Role": "user", "Content": "Hello, how are you?"},
        {"Role": "assistant", "Content": "I'm doing great. How can I help you today?"},
        {"Role": "user", "Content": "I'd like to show off how chat templating works!"},
    ],
}
CONVERSATIONS["system-user-assistant-user"] = [
    {"Role": "system", "Content": "You are a helpful assistant."},
    *CONVERSATIONS["user-assistant-user"],
]

#: Prompts for "system-user-assistant-user". For 16 families they equal the outputs in
#: Ollama's template testdata; command-r, gemma3-instruct and llama2-chat follow the models'
#: published Jinja templates instead (Ollama's files differ in end-of-turn details).
EXPECTED_PROMPTS = {
    "alfred": "<start_system>You are a helpful assistant.<end_message><start_user>Hello, how are"
              " you?<end_message><start_assistant>I'm doing great. How can I help you today?"
              "<end_message><start_user>I'd like to show off how chat templating works!"
              "<end_message><start_assistant>",
    "alpaca": "You are a helpful assistant.\n\n### Instruction:\nHello, how are you?\n\n### "
              "Response:\nI'm doing great. How can I help you today?\n\n### Instruction:\nI'd "
              "like to show off how chat templating works!\n\n### Response:\n",
    "chatml": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
              "Hello, how are you?<|im_end|>\n<|im_start|>assistant\nI'm doing great. How can I "
              "help you today?<|im_end|>\n<|im_start|>user\nI'd like to show off how chat "
              "templating works!<|im_end|>\n<|im_start|>assistant\n",
    "chatqa": "System: You are a helpful assistant.\n\nUser: Hello, how are you?\n\nAssistant: "
              "I'm doing great. How can I help you today?\n\nUser: I'd like to show off how chat "
              "templating works!\n\nAssistant:",
    "codellama-70b-instruct": "Source: system\n\n You are a helpful assistant. <step> Source: "
                              "user\n\n Hello, how are you? <step> Source: assistant\n\n I'm "
                              "doing great. How can I help you today? <step> Source: user\n\n "
                              "I'd like to show off how chat templating works! <step> Source: "
                              "assistant\nDestination: user\n\n ",
    "command-r": "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are a helpful assistant."
                 "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hello, how are you?"
                 "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>I'm doing great. "
                 "How can I help you today?<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|>"
                 "<|USER_TOKEN|>I'd like to show off how chat templating works!"
                 "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
    "falcon-instruct": "System: You are a helpful assistant.\nUser:\nHello, how are you?\n"
                       "Falcon:\nI'm doing great. How can I help you today?\nUser:\nI'd like to "
                       "show off how chat templating works!\nFalcon:\n",
    "gemma-instruct": "<start_of_turn>user\nYou are a helpful assistant.\nHello, how are you?"
                      "<end_of_turn>\n<start_of_turn>model\nI'm doing great. How can I help you "
                      "today?<end_of_turn>\n<start_of_turn>user\nI'd like to show off how chat "
                      "templating works!<end_of_turn>\n<start_of_turn>model\n",
    "gemma3-instruct": "<start_of_turn>user\nYou are a helpful assistant.\n\nHello, how are you?"
                       "<end_of_turn>\n<start_of_turn>model\nI'm doing great. How can I help you "
                       "today?<end_of_turn>\n<start_of_turn>user\nI'd like to show off how chat "
                       "templating works!<end_of_turn>\n<start_of_turn>model\n",
    "granite-instruct": "System:\nYou are a helpful assistant.\n\nQuestion:\nHello, how are you?"
                        "\n\nAnswer:\nI'm doing great. How can I help you today?\n\nQuestion:\n"
                        "I'd like to show off how chat templating works!\n\nAnswer:\n",
    "llama2-chat": "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello, how are you?"
                   " [/INST] I'm doing great. How can I help you today? </s><s>[INST] I'd like to "
                   "show off how chat templating works! [/INST]",
    "llama3-instruct": "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful "
                       "assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello, "
                       "how are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
                       "I'm doing great. How can I help you today?<|eot_id|><|start_header_id|>"
                       "user<|end_header_id|>\n\nI'd like to show off how chat templating works!"
                       "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    "magicoder": "You are a helpful assistant.\n\n@@ Instruction\nHello, how are you?\n\n@@ "
                 "Response\nI'm doing great. How can I help you today?\n\n@@ Instruction\nI'd "
                 "like to show off how chat templating works!\n\n@@ Response\n",
    "mistral-instruct": "[INST] You are a helpful assistant.\n\nHello, how are you?[/INST] I'm "
                        "doing great. How can I help you today?</s>[INST] I'd like to show off "
                        "how chat templating works![/INST]",
    "openchat": "GPT4 Correct System: You are a helpful assistant.<|end_of_turn|>GPT4 Correct "
                "User: Hello, how are you?<|end_of_turn|>GPT4 Correct Assistant: I'm doing great."
                " How can I help you today?<|end_of_turn|>GPT4 Correct User: I'd like to show off"
                " how chat templating works!<|end_of_turn|>GPT4 Correct Assistant:",
    "phi-3": "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello, how are you?"
             "<|end|>\n<|assistant|>\nI'm doing great. How can I help you today?<|end|>\n"
             "<|user|>\nI'd like to show off how chat templating works!<|end|>\n<|assistant|>\n",
    "solar-instruct": "### System:\nYou are a helpful assistant.\n\n### User:\nHello, how are "
                      "you?\n\n### Assistant:\nI'm doing great. How can I help you today?</s>\n\n"
                      "### User:\nI'd like to show off how chat templating works!\n\n### "
                      "Assistant:\n",
    "starcoder2-instruct": "You are a helpful assistant.\n\n### Instruction\nHello, how are you?"
                           "\n\n### Response\nI'm doing great. How can I help you today?"
                           "<|endoftext|>\n\n### Instruction\nI'd like to show off how chat "
                           "templating works!\n\n### Response\n",
    "zephyr": "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHello, how are you?</s>\n"
              "<|assistant|>\nI'm doing great. How can I help you today?</s>\n<|user|>\nI'd like "
              "to show off how chat templating works!</s>\n<|assistant|>\n",
}


def test_expected_prompts_cover_every_family() -> None:
    assert set(EXPECTED_PROMPTS) == set(FAMILIES)


def test_templates_render_in_both_forms(go_harness: GoHarness) -> None:
    requests: list[dict[str, object]] = []
    keys = []
    for name in FAMILIES:
        text = load_template(name).template
        for conversation, messages in CONVERSATIONS.items():
            for legacy in (False, True):
                requests.append({"op": "render", "text": text, "messages": messages,
                                 "legacy": legacy})
                keys.append((name, conversation, legacy))
    results = dict(zip(keys, go_harness.run(requests), strict=True))
    for name in FAMILIES:
        assert results[(name, "system-user-assistant-user", False)] == EXPECTED_PROMPTS[name]
        for conversation in CONVERSATIONS:
            messages_form = results[(name, conversation, False)]
            assert not messages_form.startswith("ERROR"), (name, messages_form)
            # The legacy .System/.Prompt/.Response form yields the same prompt.
            assert results[(name, conversation, True)] == messages_form, (name, conversation)
