"""The lab: a local web app that trains a cross-entropy model and a reward-blended one side by side and shows
the exposure-bias gap live (jobs.py: the workers; app.py: the HTTP API; page.py and static/: the page).
`create_app` needs the `lab` extra (fastapi, uvicorn); it is imported on first use."""

from __future__ import annotations


def create_app(*args, **kwargs):
    """The lab's ASGI app (see `unforced.lab.app.create_app`)."""
    from unforced.lab.app import create_app as build

    return build(*args, **kwargs)


__all__ = ["create_app"]
