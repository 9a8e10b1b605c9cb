"""The phone page for a field the cell-count rule held back, in headless Debian Chromium at
360 px: a real benign field read from 10 white cells, on a daemon whose bundle (a copy of the
shipped one, its rule set to 11, run unsigned as development allows) needs 11 to clear a
field. The card says "uncertain", why, how many cells were read and how many are needed."""

from __future__ import annotations

import shutil

from conftest import ServerProcess, sample_paths

from test_browser import SCREENSHOTS, _driver, log_in


def test_the_card_says_why_a_field_is_not_cleared_on_too_few_cells(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from converter.bundle import rewrite_bundle
    from edge.model.bundle import default_bundle_path, load_bundle

    ruled = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), ruled)
    calibration = {**load_bundle(default_bundle_path()).calibration.to_dict(), "min_cells_to_clear": 11}
    rewrite_bundle(ruled, calibration=calibration)  # unsigned
    fields = tmp_path / "fields"
    fields.mkdir()
    shutil.copy(next(p for p in sample_paths() if p.name == "benign__WBC-Benign-182.jpg"), fields)
    config = tmp_path / "blastscope.toml"
    config.write_text(f'[inference]\nbundle = "{ruled}"\nallow_unsigned = true\n[camera]\nsource = "replay:{fields}"\n')
    server = ServerProcess(tmp_path / "state", "--config", str(config))
    driver = _driver(tmp_path / "profile", 360, 740)
    try:
        wait = WebDriverWait(driver, 30)
        log_in(driver, server.url)
        wait.until(ec.element_to_be_clickable((By.ID, "analyze")))
        wait.until(lambda d: d.execute_script("return document.getElementById('preview').naturalWidth") > 0)
        driver.find_element(By.ID, "analyze").click()
        wait.until(ec.visibility_of_element_located((By.ID, "card")))
        assert driver.find_element(By.ID, "call").text == "◆ Uncertain"
        low = f"{100 * calibration['uncertain_low']:.0f}%"  # as the page rounds it
        assert f"Negative below {low} with at least 11 white cells," in driver.find_element(By.ID, "malignant").text
        assert driver.find_element(By.ID, "next-step").text == (
            "Too few white cells to call this field negative: analyse more fields of this slide "
            "(10 white cells read, 11 needed).")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.execute_script("document.getElementById('card').scrollIntoView()")
        shot = SCREENSHOTS / "phone_few_cells_card.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()
        server.stop()
