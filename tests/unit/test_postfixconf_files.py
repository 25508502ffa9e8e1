"""config/postfix/*.fragment are exactly what postfix-config renders for the default config.

Regenerate them after changing mailpolicy/postfixconf.py:
    .venv/bin/python tests/unit/test_postfixconf_files.py --write
"""

from __future__ import annotations

from pathlib import Path

from golden import write_on_request

from mailpolicy import config
from mailpolicy.deploy import postfix as postfixconf

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_POOL = ("127.0.0.1",)  # what outbound.pool() gives on a host with no other address
# the deployment's state_dir (README), so the SNI map path does not depend on the checkout
EXAMPLE = {"paths": {"state_dir": "/var/lib/mailpolicy"}}


def expected() -> dict[Path, str]:
    cfg = config.from_dict(EXAMPLE)
    return {
        REPO / "config/postfix/main.cf.fragment": postfixconf.render_main(cfg, EXAMPLE_POOL),
        REPO / "config/postfix/master.cf.fragment": postfixconf.render_master(cfg, EXAMPLE_POOL),
    }


def test_example_fragments_equal_render_of_the_default_config() -> None:
    for path, text in expected().items():
        assert path.read_text() == text, (
            f"{path.relative_to(REPO)} drifted from postfixconf; regenerate with "
            f"`.venv/bin/python tests/unit/test_postfixconf_files.py --write`")


def test_text_render_is_the_two_fragments() -> None:
    cfg = config.from_dict(EXAMPLE)
    main, master = expected().values()
    assert postfixconf.render(cfg, EXAMPLE_POOL, as_json=False) == main + "\n" + master


if __name__ == "__main__":
    write_on_request(expected, REPO)
