"""Ollama's request vocabulary mapped onto llama.cpp's (no model needed)."""

import pytest

from rudder.llm.engine import InvalidRequestError, llama_request


def test_options_are_renamed_and_negative_num_predict_means_unbounded():
    req = llama_request(
        {
            "temperature": 0,
            "seed": 7,
            "num_predict": 64,
            "stop": "\n",
            "top_k": 5,
            "top_p": 0.9,
            "num_ctx": 2048,
            "num_gpu": 1,
        },
        None,
    )
    assert req == {
        "temperature": 0,
        "seed": 7,
        "max_tokens": 64,
        "stop": ["\n"],
        "top_k": 5,
        "top_p": 0.9,
    }
    assert "max_tokens" not in llama_request({"num_predict": -1}, None)


def test_format_json_and_schema():
    assert llama_request(None, "json") == {"response_format": {"type": "json_object"}}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert llama_request(None, schema)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"schema": schema},
    }


@pytest.mark.parametrize(
    ("options", "fmt", "message"),
    [
        ({"temprature": 0}, None, "unknown option 'temprature'"),
        (None, "yaml", "format must be"),
        (None, 3, "format must be"),
    ],
)
def test_bad_requests_are_explained(options, fmt, message):
    with pytest.raises(InvalidRequestError, match=message):
        llama_request(options, fmt)
