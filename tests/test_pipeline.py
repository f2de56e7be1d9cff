"""The pipeline without HTTP: what a stream holds is released however the stream ends."""

from __future__ import annotations

from pathlib import Path

from gateway.http.replies import StreamReply
from gateway.pipeline import Pipeline
from gateway.reloader import Reloader
from gateway.services import Services

BODY = b'{"model": "echo", "stream": true, "messages": [{"role": "user", "content": "one two three"}]}'


def pipeline(tmp_path: Path) -> tuple[Pipeline, Reloader]:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "reload: {watch: false}\nauth: {enabled: false}\npools:\n  echo:\n    deployments: [{id: e, backend: echo}]\n"
    )
    reloader = Reloader(str(path))
    return Services(reloader).pipeline, reloader


async def test_a_stream_closed_before_its_first_frame_releases_everything(tmp_path: Path) -> None:
    p, reloader = pipeline(tmp_path)
    reply = await p.handle("chat/completions", BODY, [])
    assert isinstance(reply, StreamReply)
    deployment = reloader.runtime.pools[0].deployments[0]
    assert (p.in_flight, deployment.in_flight) == (1, 1)
    await reply.close()  # the client left before anything was sent
    await reply.close()  # and a second close does nothing
    assert (p.in_flight, deployment.in_flight) == (0, 0)


async def test_a_stream_read_to_the_end_releases_everything_once(tmp_path: Path) -> None:
    p, reloader = pipeline(tmp_path)
    reply = await p.handle("chat/completions", BODY, [])
    assert isinstance(reply, StreamReply)
    frames = [f async for f in reply.frames]
    assert frames[-1] == b"data: [DONE]\n\n" and frames.count(b"data: [DONE]\n\n") == 1
    await reply.close()
    deployment = reloader.runtime.pools[0].deployments[0]
    assert (p.in_flight, deployment.in_flight) == (0, 0)
    assert deployment.breaker.counts() == (1, 0)  # one success recorded, not two
