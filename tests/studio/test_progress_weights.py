"""The progress bar's shape, without a browser or a clock: sampling is most of the bar.

The browser test checks what the card shows at holds (stage, time left, preview, a bar
that never goes back and ends full); how far each step moves the bar is decided here, by
the weights a workflow gets before any run was measured.
"""

from __future__ import annotations

from backend.config import REPO_ROOT
from backend.workflows import Library
from studio import weights
from studio.render import ProgressView, progress_card

SPEC = Library.load(REPO_ROOT / "workflows").get("txt2img-sd15")
#: txt2img-sd15 in the order ComfyUI runs it: loader, prompts, latent, sampler, decoder, save.
BEFORE_SAMPLER = ["4", "10", "6", "7", "5"]


def bar(step: float) -> float:
    return weights.fraction(SPEC, weights.by_kind(SPEC), [*BEFORE_SAMPLER, "3"], step)


def test_sampling_is_most_of_the_bar_and_the_bar_only_moves_forward() -> None:
    early, late = [bar(s / 20) for s in range(0, 6)], [bar(s / 20) for s in range(15, 21)]
    assert max(early) < 0.45 and min(late) > 0.6, (early, late)
    along = [bar(s / 20) for s in range(21)] + [weights.fraction(SPEC, weights.by_kind(SPEC), [*BEFORE_SAMPLER, "3", n], 0.5)
                                                for n in ("8", "9")]
    assert along == sorted(along), along
    assert weights.fraction(SPEC, weights.by_kind(SPEC), [*BEFORE_SAMPLER, "3", "8", "9"], 1.0) == 1.0


def test_the_running_card_shows_the_stage_the_steps_and_the_time_left() -> None:
    view = ProgressView(job_id="j1", workflow=SPEC.name, state="running", cost=2, stage="Painting", value=5, max=20,
                        fraction=bar(5 / 20), eta_seconds=12.4, preview="ab" * 32)
    card = progress_card(view, "en")
    assert 'data-state="running"' in card and '<span class="stage" id="stage">Painting</span>' in card
    assert "step 5/20" in card and "about 12 s left" in card and f"/files/{'ab' * 32}" in card
