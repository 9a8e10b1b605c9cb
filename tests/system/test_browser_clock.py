"""An admin's phone sets the device's clock (issue 36 item 7), in headless Debian Chromium at
360 px against a real daemon. The phone's clock is moved three hours ahead of the device's in the
page (the browser is the phone; this machine's clock must not move), the page says the clocks
disagree and offers the admin the button, and the daemon runs its set-time command with the
phone's time. The command is a script standing in for ``timedatectl set-time``: a test must
never set this machine's clock."""

from __future__ import annotations

import time

from conftest import ROOT, ServerProcess

from test_browser import SCREENSHOTS, _driver, log_in

#: The phone three hours ahead of the device: a Pi that booted without the time.
SHIFT_S = 3 * 3600

PHONE_AHEAD = f"""
const realNow = Date.now, RealDate = Date, shift = {SHIFT_S * 1000};
window.Date = class extends RealDate {{
  constructor(...a) {{ if (a.length) super(...a); else super(realNow() + shift); }}
  static now() {{ return realNow() + shift; }}
}};
"""


def test_an_admin_sets_the_device_clock_from_the_phone(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    asked = tmp_path / "asked"
    script = tmp_path / "set-time"
    script.write_text(f'#!/bin/sh\necho "$@" > {asked}\n')
    script.chmod(0o755)
    config = tmp_path / "blastscope.toml"
    config.write_text(f'[camera]\nsource = "replay:{ROOT / "edge" / "samples"}"\n[clock]\nset_command = ["{script}"]\n')
    server = ServerProcess(tmp_path / "state", "--config", str(config))
    driver = _driver(tmp_path / "profile", 360, 740)
    try:
        wait = WebDriverWait(driver, 30)
        log_in(driver, server.url)
        assert not driver.find_element(By.ID, "clock-fix").is_displayed()  # the clocks agree
        driver.execute_script(PHONE_AHEAD + "refreshStatus();")
        wait.until(ec.visibility_of_element_located((By.ID, "set-clock")))
        assert "min behind this phone's" in driver.find_element(By.ID, "degraded").text
        before = time.time()
        driver.find_element(By.ID, "set-clock").click()
        wait.until(lambda d: d.find_element(By.ID, "clock-message").text.startswith("Set to"))
        asked_for = int(asked.read_text().strip().lstrip("@"))
        assert abs(asked_for - (before + SHIFT_S)) < 60, asked_for - before  # the phone's time, not the device's
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / "phone_clock_set.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()
        server.stop()
