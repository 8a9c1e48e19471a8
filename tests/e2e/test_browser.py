"""A real headless Chromium uses the gateway's page: lists products, places an order, sees the notification live."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, tool
from tests.e2e.harness import Launcher

ARTIFACTS = ROOT / "test-artifacts"


def _binary(name: str) -> str:
    return tool(name, install="Debian: apt-get install chromium chromium-driver")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--disable-quic", "--no-first-run", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=_binary("chromedriver")), options=options)
    yield driver
    driver.quit()


def test_a_shopper_places_an_order_and_sees_its_notification_arrive_without_reloading(browser, launcher: Launcher) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 15)
    browser.get(f"http://{launcher.address('gateway')}/")
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, '#products tr[data-sku="french-press"]')))
    stock_before = int(browser.find_element(By.CSS_SELECTOR, '#products tr[data-sku="french-press"] .available').text)

    user = browser.find_element(By.ID, "user")
    user.clear()
    user.send_keys(f"shopper-{uuid.uuid4().hex[:8]}")
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", user)
    wait.until(ready.text_to_be_present_in_element((By.ID, "stream-state"), "live"))
    marker = browser.execute_script("window.__samePage = true; return window.__samePage")

    Select(browser.find_element(By.ID, "sku")).select_by_value("french-press")
    quantity = browser.find_element(By.ID, "quantity")
    quantity.clear()
    quantity.send_keys("2")
    browser.find_element(By.ID, "place-order").click()

    status = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#order-status p[data-order-id]")))
    order_id = status.get_attribute("data-order-id")
    assert "CONFIRMED" in status.text and "USD 59.98" in status.text
    note = wait.until(ready.presence_of_element_located(
        (By.CSS_SELECTOR, f'#notifications li[data-event-id="order.created:{order_id}"]')))
    assert "confirmed" in note.text
    assert browser.execute_script("return window.__samePage") is marker is True  # no reload happened
    stock_after = int(browser.find_element(By.CSS_SELECTOR, '#products tr[data-sku="french-press"] .available').text)
    assert stock_after == stock_before - 2

    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "browser-order.png"))


def test_the_docs_page_lists_every_operation(browser, launcher: Launcher) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"http://{launcher.address('gateway')}/docs")
    WebDriverWait(browser, 15).until(ready.presence_of_element_located((By.ID, "OrderService_CreateOrder")))
    operations = browser.find_elements(By.CSS_SELECTOR, "section.op")
    assert len(operations) >= 14
    assert "/v1/orders/{order_id}:cancel" in browser.find_element(By.ID, "OrderService_CancelOrder").text
