"""Ollama's request vocabulary mapped onto llama.cpp's (no model needed)."""

import pytest

from rudder.llm.engine import InvalidRequestError, llama_request
from rudder.llm.options import checked_options


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
        ({"temperature": "hot"}, None, "'temperature' must be of type number"),
        ({"num_predict": 2**70}, None, "'num_predict' is out of range"),
        ({"seed": 2**33}, None, "'seed' is out of range"),
        ({"top_p": 1e300}, None, "'top_p' is out of range"),
        ({"top_k": True}, None, "'top_k' must be of type integer"),
        ({"stop": [1]}, None, "'stop' must be a list of strings"),
        ({"use_mmap": 1}, None, "'use_mmap' must be of type boolean"),
        ({"num_ctx": 0}, None, "'num_ctx' must lie in"),
        ({"num_ctx": 10**9}, None, "'num_ctx' must lie in"),
        (None, "yaml", "format must be"),
        (None, 3, "format must be"),
    ],
)
def test_bad_requests_are_explained(options, fmt, message):
    with pytest.raises(InvalidRequestError, match=message):
        llama_request(options, fmt)


def test_unknown_options_are_ignored_with_one_short_warning(caplog):
    with caplog.at_level("WARNING", logger="rudder.llm.options"):
        req = llama_request({"temprature": 0, "seed": 3, **{f"x{i}": i for i in range(1000)}}, None)
    assert req == {"seed": 3}
    [record] = caplog.records
    assert "'temprature'" in record.message and "and 996 more" in record.message
    assert len(record.message) < 200


def test_numbers_are_taken_as_ollama_takes_them():
    # JSON has one number type: an integer option given 1.5 is truncated, as Go does.
    assert llama_request({"num_predict": 1.9, "top_k": 4.0}, None) == {"max_tokens": 1, "top_k": 4}
    assert llama_request({"temperature": 1}, None) == {"temperature": 1.0}
    assert llama_request({"seed": -1, "temperature": None}, None) == {}  # random seed; null: unset
    assert checked_options({"num_ctx": 32}) == {"num_ctx": 32}  # small contexts are fine
