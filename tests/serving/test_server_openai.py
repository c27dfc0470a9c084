"""The server through the OpenAI Python client over loopback: models, completions and chat, streamed
and not, answering from a memory named in `extra_body`, and errors as the client's exceptions."""

from __future__ import annotations

import openai
import pytest


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="not-checked", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def memory(server, document):
    import httpx

    response = httpx.post(f"{server}/v1/memories", json={"id": "novel", "text": document}, timeout=120)
    assert response.status_code == 201, response.text
    return "novel"


def test_models_lists_the_served_adapter(client, reader):
    assert [m.id for m in client.models.list().data] == [reader.name] == ["adapter"]


def test_completion_from_a_memory_equals_the_reader_and_streams_the_same(client, reader, memory, document):
    prompt = reader.question_prompt("Who wrote a letter?")
    expected = reader.complete([reader.read_text(document)], [prompt], 10)[0]
    result = client.completions.create(model=reader.name, prompt=prompt, max_tokens=10, extra_body={"memory": memory})
    assert result.choices[0].text == expected.text
    assert result.choices[0].finish_reason == expected.finish_reason
    assert result.usage.completion_tokens == expected.completion_tokens
    pieces, finishes = [], []
    for chunk in client.completions.create(model=reader.name, prompt=prompt, max_tokens=10, stream=True,
                                           extra_body={"memory": memory}):
        pieces.append(chunk.choices[0].text)
        finishes.append(chunk.choices[0].finish_reason)
    assert "".join(pieces) == expected.text
    assert finishes[-1] == expected.finish_reason and set(finishes[:-1]) <= {None}


def test_chat_from_a_memory_streamed_and_not(client, reader, memory, document):
    messages = [{"role": "user", "content": "Where is the apple?"}]
    prompt = reader.chat_prompt(messages)
    assert prompt == "<user>Where is the apple?\n<assistant>"  # the tokenizer's own template
    expected = reader.complete([reader.read_text(document)], [prompt], 12)[0]
    result = client.chat.completions.create(model=reader.name, messages=messages, max_tokens=12,
                                            extra_body={"memory": memory})
    assert result.choices[0].message.content == expected.text
    assert result.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model=reader.name, messages=messages, max_tokens=12, stream=True,
                                            extra_body={"memory": memory})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.text
    assert chunks[-1].choices[0].finish_reason == expected.finish_reason
    # Content given as parts reads the same as a string.
    parts = [{"role": "user", "content": [{"type": "text", "text": "Where is "}, {"type": "text", "text": "the apple?"}]}]
    again = client.chat.completions.create(model=reader.name, messages=parts, max_tokens=12, extra_body={"memory": memory})
    assert again.choices[0].message.content == expected.text


def test_without_a_memory_a_completion_is_plain_generation_over_the_prompt(client, reader):
    prompt = "The lighthouse keeper wrote a letter to his sister every winter. The river"
    ids = reader.encode(prompt, document_start=True).unsqueeze(0)
    expected = reader.completion(reader.model.generate(ids, max_new_tokens=6)[0].tolist(), 0, ())
    result = client.completions.create(model=reader.name, prompt=prompt, max_tokens=6)
    assert result.choices[0].text == expected.text


def test_stop_strings_cut_the_answer(client, reader, memory):
    prompt = reader.question_prompt("Where is Mary?")
    full = client.completions.create(model=reader.name, prompt=prompt, max_tokens=16, extra_body={"memory": memory})
    text = full.choices[0].text
    stop = text.strip()[:1]
    assert stop, "the answer is empty, so no stop string can be taken from it"
    cut = client.completions.create(model=reader.name, prompt=prompt, max_tokens=16, stop=[stop],
                                    extra_body={"memory": memory})
    assert cut.choices[0].text == text[: text.find(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=reader.name, prompt=prompt, max_tokens=16, stop=[stop], stream=True,
                                         extra_body={"memory": memory})
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text


def test_errors_arrive_as_openai_exceptions(client, reader):
    with pytest.raises(openai.NotFoundError, match="no memory 'absent'"):
        client.completions.create(model=reader.name, prompt="hi", extra_body={"memory": "absent"})
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="over the server's limit"):
        client.completions.create(model=reader.name, prompt="hi", max_tokens=10_000)
    with pytest.raises(openai.BadRequestError, match="only text message parts"):
        client.chat.completions.create(model=reader.name, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://127.0.0.1/x.png"}}]}])
