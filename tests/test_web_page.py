"""The web chat page in headless Chromium (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from mistralvllm.history import SQLiteHistory
from service import API_KEY

CHROMIUM = shutil.which("chromium")


@pytest.fixture
def page(server: dict[str, str]):
    assert CHROMIUM, "Debian's chromium is required (make test installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(server["url"] + "/")
        page.locator("summary").click()
        page.fill("#api-key", API_KEY)
        page.locator("#api-key").dispatch_event("change")
        page.reload()
        expect(page.locator("#model")).to_have_text("SmolLM2-135M-Instruct.Q4_1")
        yield page
        browser.close()


def test_chat_stop_reload_and_find_the_conversation(page, tmp_path: Path) -> None:
    page.fill("#prompt", "What is the chemical symbol for water?")
    page.keyboard.press("Enter")
    answer = page.locator(".message.assistant").last
    expect(answer.locator(".content")).to_contain_text("H2O", timeout=60_000)
    expect(answer.locator(".stats")).to_contain_text("tok/s", timeout=60_000)
    # The usage event comes just before the stream ends; the page takes the next prompt once Send is enabled again.
    expect(page.locator("#send")).to_be_enabled(timeout=60_000)

    page.fill("#prompt", "Write a long story about a dragon who learns to fly.")
    page.keyboard.press("Enter")
    story = page.locator(".message.assistant").last.locator(".content")
    expect(story).to_contain_text("upon a time", timeout=60_000)
    page.click("#stop")
    expect(story).to_contain_text("[stopped]")
    page.screenshot(path=str(tmp_path / "chat.png"))

    page.reload()
    entry = page.locator("#conversations li", has_text="What is the chemical symbol for water?")
    expect(entry).to_have_count(1)
    entry.locator("span").click()
    expect(page.locator(".message")).to_have_count(4)
    expect(page.locator(".message.assistant").first).to_contain_text("H2O")
    expect(page.locator(".message.assistant").last).to_contain_text("[stopped]")
    assert (tmp_path / "chat.png").stat().st_size > 10_000


def test_model_output_is_shown_as_text_not_html(page, server: dict[str, str]) -> None:
    conversation = SQLiteHistory(server["history"]).new(conversation_id="xss-check")
    conversation.record_turn("markup check", 'Look: <img src=x onerror="window.hacked=1"><script>window.hacked=2</script> **bold**')
    page.reload()
    page.locator("#conversations li", has_text="markup check").locator("span").click()
    content = page.locator(".message.assistant .content")
    expect(content).to_contain_text('<img src=x onerror="window.hacked=1">')
    expect(content.locator("strong")).to_have_text("bold")
    assert content.locator("img, script").count() == 0
    assert page.evaluate("window.hacked") is None
