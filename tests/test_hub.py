"""A hub profile's first job says, in a second, why the pinned model or dataset cannot be had."""

from __future__ import annotations

import pytest

from offloadbench import hub

MODEL = ["--model", "meta-llama/Llama-3.1-8B", "--model-revision", "d04e592bb4f6aa9cfee91e2e20afa771667e1d4b"]
SECRET = "hf_FAKEtokenThatMustNeverBePrinted0000"


def test_unreachable_hub_names_the_model_and_the_way_out(tmp_path, monkeypatch, capsys):
    """This machine has no route to the hub: the error names the model and HF_HUB_OFFLINE."""
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert hub.main([*MODEL, "--out", str(tmp_path / "access.json")]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Hugging Face hub" in err and "meta-llama/Llama-3.1-8B" in err
    assert "HF_HUB_OFFLINE" in err and SECRET not in err
    assert not (tmp_path / "access.json").exists()


def test_offline_mode_without_the_files_in_the_cache_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    args = ["--dataset", "Salesforce/wikitext", "--dataset-revision", "b08601e04326c79dfdd32d625aee71d232d685c3"]
    assert hub.main([*args, "--out", str(tmp_path / "access.json")]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE=1" in err and "dataset Salesforce/wikitext" in err and "not in the Hugging Face cache" in err


@pytest.mark.parametrize("token", [None, SECRET])
def test_gated_model_asks_for_hf_token_or_the_license(tmp_path, monkeypatch, capsys, token):
    import httpx2
    from huggingface_hub.errors import GatedRepoError

    url = "https://huggingface.co/api/models/meta-llama/Llama-3.1-8B/auth-check"
    response = httpx2.Response(403, request=httpx2.Request("GET", url))

    def gated(*args, **kwargs):
        raise GatedRepoError("403 gated", response=response)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "get_token", lambda: token)
    monkeypatch.setattr(hub.HfApi, "auth_check", gated)
    assert hub.main([*MODEL, "--out", str(tmp_path / "access.json")]) == 2
    err = capsys.readouterr().err
    assert "meta-llama/Llama-3.1-8B" in err and "gated" in err
    assert ("set the environment variable HF_TOKEN" in err) == (token is None)
    assert "license at https://huggingface.co/meta-llama/Llama-3.1-8B" in err and SECRET not in err


def test_reachable_repository_is_recorded_without_the_token(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "get_token", lambda: SECRET)
    monkeypatch.setattr(hub.HfApi, "auth_check", lambda *a, **k: None)
    monkeypatch.setattr(hub.HfApi, "model_info", lambda *a, **k: None)
    assert hub.main([*MODEL, "--out", str(tmp_path / "access.json")]) == 0
    text = (tmp_path / "access.json").read_text()
    assert '"token_found": true' in text and '"via": "hub"' in text and SECRET not in text
