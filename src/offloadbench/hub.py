"""Check, before any download or training, that the hub model and dataset of a profile can be had.

    python -m offloadbench.hub --model meta-llama/Llama-3.1-8B --model-revision <sha> \
        --dataset Salesforce/wikitext --dataset-revision <sha> --out results/hub/access.json

The first job of a hub profile. It fails in a second, with a message that names the repository and
what to do (set HF_TOKEN, accept the license, reach the network, or pre-fill the cache for
HF_HUB_OFFLINE=1), instead of failing inside tokenization or after an hour of downloading.
The token itself is never printed or written: only whether one was found.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, get_token, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .io import write_json


class HubAccessError(RuntimeError):
    pass


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def check_repo(repo_id: str, revision: str, repo_type: str) -> str:
    """How the repository will be read ("cache" or "hub"); HubAccessError says why it cannot."""
    what = f"{repo_type} {repo_id} at revision {revision}"
    if _offline():
        try:
            snapshot_download(repo_id, revision=revision, repo_type=repo_type, local_files_only=True)
        except (LocalEntryNotFoundError, FileNotFoundError) as err:
            raise HubAccessError(
                f"HF_HUB_OFFLINE=1 but {what} is not in the Hugging Face cache "
                f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}): download it once with network access "
                "(and HF_TOKEN for gated repositories), or unset HF_HUB_OFFLINE"
            ) from err
        return "cache"
    token = get_token()
    try:
        HfApi().auth_check(repo_id, repo_type=repo_type, token=token)
        if repo_type == "model":
            HfApi().model_info(repo_id, revision=revision, token=token)
        else:
            HfApi().dataset_info(repo_id, revision=revision, token=token)
    except GatedRepoError as err:
        fix = (
            "set the environment variable HF_TOKEN to a token of an account that has accepted the license"
            if token is None
            else "the token in HF_TOKEN belongs to an account that has not been granted access: accept the license"
        )
        raise HubAccessError(f"{what} is gated: {fix} at https://huggingface.co/{repo_id}") from err
    except RevisionNotFoundError as err:
        raise HubAccessError(f"{what}: revision {revision} does not exist; check the pinned revision") from err
    except RepositoryNotFoundError as err:
        hint = "" if token else " (or it is private: set HF_TOKEN)"
        raise HubAccessError(f"{what}: no such repository on the hub{hint}") from err
    except (OSError, httpx2.TransportError) as err:  # DNS, refused connection, TLS, timeout: the network
        raise HubAccessError(  # (huggingface_hub's transport errors are httpx2's, not OSError subclasses)
            f"cannot reach the Hugging Face hub to read {what} ({type(err).__name__}: {err}); check the network "
            "or proxy, or run with HF_HUB_OFFLINE=1 and a pre-filled cache (HF_HOME)"
        ) from err
    return "hub"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offloadbench.hub", description=__doc__.split("\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--model-revision")
    parser.add_argument("--dataset")
    parser.add_argument("--dataset-revision")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    record = {"offline": _offline(), "token_found": get_token() is not None}
    try:
        if args.model:
            record["model"] = {"id": args.model, "revision": args.model_revision}
            record["model"]["via"] = check_repo(args.model, args.model_revision, "model")
        if args.dataset:
            record["dataset"] = {"path": args.dataset, "revision": args.dataset_revision}
            record["dataset"]["via"] = check_repo(args.dataset, args.dataset_revision, "dataset")
    except HubAccessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_json(args.out, record)
    print(f"hub access ok: {record}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
