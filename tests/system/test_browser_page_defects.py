"""The page defects the review found (review issue, item 6), each checked in headless Debian
Chromium at 360x740: targets of at least 48 px, flat primary buttons, the case bar's target
and its own icon for "more fields needed", no silent cut of a long lab number and its error in
view, "saved" after a review and an exclusion, a refusal's figure on screen, contrast of the
offline chip and the report's excluded caption, the audit log in words, the report's wording
(no internal path, probabilities as the page says them, review time, a signature line, the case
code and page number on every printed page), and the login page's warning before a lockout
and the lockout on a fresh page. Back after logout is checked in process (tests/web/test_routes.py,
the no-store header): headless Chromium under WebDriver keeps no back-forward cache, so a check
here passed with the defect in place."""

from __future__ import annotations

import base64
import io
import re
import unicodedata

from PIL import Image

from conftest import configured_server, sample_paths
from test_browser import _driver
from test_browser_cases import _in_view, _log_in, _new_case

SMALL_TARGETS = """
const out = [];
for (const el of document.querySelectorAll('button, a, summary, select, label[for=upload], input:not([type=hidden]):not([type=file]):not([type=radio])')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) continue;  // not shown
  if (el.closest('.cell-grid')) continue;  // cell thumbnails: checked by their own test
  if (r.height < 47.5 || (el.tagName !== 'INPUT' && el.tagName !== 'SELECT' && el.tagName !== 'SUMMARY' && r.width < 47.5))
    out.push(`${el.tagName}#${el.id || ''}.${el.className} ${Math.round(r.width)}x${Math.round(r.height)} "${(el.textContent || '').trim().slice(0, 30)}"`);
}
return out;
"""

RGB = re.compile(r"rgba?\(([\d.]+), ([\d.]+), ([\d.]+)")


def _luminance(css: str) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (float(x) for x in RGB.match(css).groups())
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def _contrast(fg: str, bg: str) -> float:
    a, b = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def _pdf_pages(driver) -> list[str]:
    from pypdf import PdfReader
    from selenium.webdriver.common.print_page_options import PrintOptions

    pdf = PdfReader(io.BytesIO(base64.b64decode(driver.print_page(PrintOptions()))))
    return [unicodedata.normalize("NFKC", page.extract_text()) for page in pdf.pages]


def test_the_page_defects_found_in_review_are_gone(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    # a real field made too dark: the quality gate refuses it and says by how much
    pro_b = [p for p in sample_paths() if p.name.startswith("pro_b__")]
    dark = tmp_path / "too_dark__pro_b.jpg"
    Image.eval(Image.open(pro_b[0]).convert("RGB"), lambda v: v // 6).save(dark, quality=92)

    driver = _driver(tmp_path / "profile", 360, 740)
    try:
        wait = _log_in(driver, server.url)
        assert driver.execute_script(SMALL_TARGETS) == []
        # the header's title, status chip and Log out side by side, none running under another
        boxes = driver.execute_script("return [...document.querySelectorAll('header > *')].map(e => "
                                      "[e.getBoundingClientRect().left, e.getBoundingClientRect().right, e.scrollWidth, e.clientWidth])")
        assert all(a[1] <= b[0] for a, b in zip(boxes, boxes[1:])) and all(sw <= cw + 1 for _, _, sw, cw in boxes), boxes

        driver.find_element(By.ID, "new-case").click()
        start = driver.find_element(By.CSS_SELECTOR, "#case-form button[type=submit]")
        assert start.value_of_css_property("border-top-style") == "solid"  # no grey bevel
        long_code = "LAB-" + "7" * 62
        box = driver.find_element(By.ID, "case-code-input")
        box.send_keys(long_code)
        assert box.get_attribute("value") == long_code  # nothing cut while typing
        start.click()
        error = driver.find_element(By.ID, "case-form-error")
        wait.until(lambda d: error.is_displayed())
        assert "at most 40 characters" in error.text and "66" in error.text and _in_view(driver, "case-form-error")
        assert box.get_attribute("value") == long_code
        box.clear()
        box.send_keys("LAB-DEFECTS")
        start.click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "case-code"), "LAB-DEFECTS"))
        assert not error.is_displayed()

        upload = driver.find_element(By.ID, "upload")
        upload.send_keys(str(pro_b[0]))
        wait.until(lambda d: d.find_element(By.ID, "cc-counts").text.startswith("1 usable fields"))
        wait.until(lambda d: re.fullmatch(r"◌ 1 of \d+ fields", d.find_element(By.ID, "case-chip").text))
        assert "◆" not in driver.find_element(By.ID, "case-chip").text  # "uncertain" keeps its own icon
        assert driver.execute_script(SMALL_TARGETS) == []

        # a review says it was saved, where the thumb is
        driver.find_element(By.ID, "review-field").click()
        driver.find_element(By.CSS_SELECTOR, "#review-form input[value=positive]").click()
        driver.find_element(By.ID, "review-reason").send_keys("blasts seen")
        assert driver.execute_script(SMALL_TARGETS) == []
        driver.find_element(By.ID, "review-submit").click()
        wait.until(lambda d: d.find_element(By.ID, "saved").is_displayed())
        assert re.match(r"Saved: review of field #\d+ \(positive\) by admin\.", driver.find_element(By.ID, "saved").text)
        assert _in_view(driver, "saved")

        # a refused field shows the figure behind the words
        upload.send_keys(str(dark))
        wait.until(lambda d: dark.name in d.find_element(By.ID, "meta").get_attribute("textContent"))
        figure = driver.find_element(By.CSS_SELECTOR, "#reasons li .figure")
        assert figure.is_displayed() and "brightness" in figure.text
        assert driver.find_element(By.CSS_SELECTOR, "#reasons li").get_attribute("title") == ""

        driver.execute_script("window.confirm = () => true; window.prompt = () => 'too dark to read';")
        driver.find_element(By.ID, "exclude-field").click()
        wait.until(lambda d: d.find_element(By.ID, "saved").text.startswith("Saved: field #"))
        assert "excluded from the case (too dark to read)" in driver.find_element(By.ID, "saved").text

        # the offline chip: at least 4.5:1
        chip = driver.execute_script("const c = document.createElement('span'); c.className = 'chip offline-chip';"
                                     "c.textContent = 'Offline'; document.querySelector('header').append(c); return c;")
        assert _contrast(chip.value_of_css_property("color"), chip.value_of_css_property("background-color")) >= 4.5

        # the audit log in words, with times a person reads
        driver.find_element(By.CSS_SELECTOR, "#audit-section summary").click()
        wait.until(lambda d: "case.review" in d.find_element(By.ID, "audit").text
                   or "result.review" in d.find_element(By.ID, "audit").text)
        audit = driver.find_element(By.ID, "audit").text
        assert "{" not in audit and '"' not in audit and not re.search(r"\b1[78]\d{8}\b", audit)

        # the report
        report_url = driver.find_element(By.ID, "cc-report").get_attribute("href")
        driver.get(report_url)
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "upload:" not in body and str(pro_b[0].parent) not in body and f"uploaded file {pro_b[0].name}" in body
        assert not re.search(r"malignant \d\.\d\d", body) and re.search(r"malignant (>99|<1|\d{1,2})%", body)
        assert re.search(r"Reviewed by admin at 20\d\d-\d\d-\d\d \d\d:\d\d: positive", body)
        assert "Reviewed and reported by (name, signature)" in body
        caption = driver.find_element(By.CSS_SELECTOR, ".field.excluded figcaption")
        opacity = driver.execute_script("let e = arguments[0], o = 1; for (; e; e = e.parentElement) "
                                        "o *= parseFloat(getComputedStyle(e).opacity); return o;", caption)
        assert opacity == 1 and _contrast(caption.find_element(By.TAG_NAME, "em").value_of_css_property("color"),
                                          "rgb(255, 255, 255)") >= 4.5
        widths = driver.execute_script("return [...document.querySelectorAll('.field')].map(f => f.getBoundingClientRect().width)")
        assert max(widths) - min(widths) < 1  # every thumbnail column as wide as the others
        pages = _pdf_pages(driver)
        for n, text in enumerate(pages, start=1):
            assert "LAB-DEFECTS" in text and f"page {n} of {len(pages)}" in text, (n, text[:200])

    finally:
        driver.quit()


def test_the_login_page_warns_before_a_lockout_and_shows_one_on_a_fresh_page(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    srv = configured_server(tmp_path, "[server]\nlockout_attempts = 3\nlockout_seconds = 30\n")
    driver = _driver(tmp_path / "profile", 360, 740)
    try:
        def wrong_pin() -> str:
            driver.get(srv.url + "/login")
            name = driver.find_element(By.ID, "name")
            name.clear()
            name.send_keys("admin")
            driver.find_element(By.ID, "pin").send_keys("000000")
            driver.find_element(By.ID, "login-button").click()
            return WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "login-error")).text

        assert driver.execute_script("return 1") == 1
        first = wrong_pin()
        assert "2 more wrong PINs and admin must wait 30 s" in first
        assert "1 more wrong PIN and admin must wait 30 s" in wrong_pin()
        third = wrong_pin()
        assert "Too many wrong PINs for admin" in third and not driver.find_element(By.ID, "login-button").is_enabled()
        driver.get(srv.url + "/login")  # a fresh page: the lockout still shows, counting down
        error = driver.find_element(By.ID, "login-error")
        assert "Too many wrong PINs" in error.text and "Try again in" in error.text
        assert not driver.find_element(By.ID, "login-button").is_enabled()
        assert driver.execute_script(SMALL_TARGETS) == []
    finally:
        driver.quit()
        srv.stop()


def test_the_live_view_streams_while_the_page_is_visible_and_closes_when_hidden(server, tmp_path):
    """Live scan issue, item 3: the preview is the MJPEG stream; a hidden page closes it."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _driver(tmp_path / "profile", 390, 844)
    try:
        _log_in(driver, server.url)
        preview = "return [document.getElementById('preview').getAttribute('src') || '', document.getElementById('preview').naturalWidth]"
        WebDriverWait(driver, 10).until(lambda d: "/api/live.mjpg" in d.execute_script(preview)[0]
                                        and d.execute_script(preview)[1] > 0)
        status = "return fetch('/api/status').then(r => r.json()).then(s => s.live_view.streams)"
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(status) == 1)
        driver.execute_script("Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});"
                              "document.dispatchEvent(new Event('visibilitychange'));")
        assert driver.execute_script(preview)[0] == ""
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(status) == 0)  # the device stopped sending
        driver.execute_script("Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});"
                              "document.dispatchEvent(new Event('visibilitychange'));")
        WebDriverWait(driver, 10).until(lambda d: "/api/live.mjpg" in d.execute_script(preview)[0])
    finally:
        driver.quit()


def test_every_field_of_a_case_is_listed_and_can_be_reviewed_or_excluded(server, tmp_path):
    """Review issue, item 3: the case card lists every field; any of them, not only the last,
    opens in the field card to be reviewed or excluded."""
    from selenium.webdriver.common.by import By

    driver = _driver(tmp_path / "profile", 390, 844)
    try:
        wait = _log_in(driver, server.url)
        _new_case(driver, wait, "LAB-LIST")
        paths = [p for p in sample_paths() if p.name.startswith(("pro_b__", "benign__"))][:3]
        for n, path in enumerate(paths, start=1):
            driver.find_element(By.ID, "upload").send_keys(str(path))
            wait.until(lambda d: d.find_element(By.ID, "cc-counts").text.startswith(f"{n} usable fields"))
        driver.find_element(By.ID, "show-case").click()
        # read in one script: the list may be rebuilt between two WebDriver calls
        rows = lambda: driver.find_elements(By.CSS_SELECTOR, "#cc-fields .field-row")  # noqa: E731
        texts = lambda: driver.execute_script(  # noqa: E731
            "return [...document.querySelectorAll('#cc-fields .field-row')].map(b => b.innerText + ' | ' + b.className)")
        wait.until(lambda d: len(rows()) == 3)
        assert driver.find_element(By.ID, "fields-summary").text.startswith("Fields (3)")
        driver.find_element(By.ID, "fields-summary").click()
        first_id = rows()[0].get_attribute("data-id")
        assert rows()[0].text.startswith(f"1. #{first_id} ")
        assert "Benign" in rows()[0].text or "Pro-B" in rows()[0].text

        rows()[0].click()  # the first field, not the last analysed
        wait.until(lambda d: f"Field #{first_id} " in d.find_element(By.ID, "meta").get_attribute("textContent"))
        driver.execute_script("window.prompt = () => 'smudge';")
        driver.find_element(By.ID, "exclude-field").click()
        wait.until(lambda d: d.find_element(By.ID, "saved").text.startswith(f"Saved: field #{first_id} excluded"))
        wait.until(lambda d: "excluded: smudge" in texts()[0] and texts()[0].endswith("field-row excluded"))
        wait.until(lambda d: d.find_element(By.ID, "cc-counts").text.startswith("2 usable fields"))

        second_id = rows()[1].get_attribute("data-id")
        rows()[1].click()
        wait.until(lambda d: f"Field #{second_id} " in d.find_element(By.ID, "meta").get_attribute("textContent"))
        driver.find_element(By.ID, "review-field").click()
        driver.find_element(By.CSS_SELECTOR, "#review-form input[value=uncertain]").click()
        driver.find_element(By.ID, "review-reason").send_keys("overlapping cells")
        driver.find_element(By.ID, "review-submit").click()
        wait.until(lambda d: d.find_element(By.ID, "saved").text.startswith(f"Saved: review of field #{second_id}"))
        driver.find_element(By.ID, "show-case").click()
        wait.until(lambda d: "reviewed by admin: uncertain" in texts()[1])
    finally:
        driver.quit()


def test_the_pi_button_is_armed_for_a_case_from_the_page(tmp_path):
    """Live scan issue, item 5, the page's part: a daemon configured with a GPIO button (on this
    machine gpiozero finds no pins, so the device says the button is not working, and arming
    still works: the pins are what cannot exist here) offers "Use the Pi's button for this
    case"; the card then says it feeds this case and who armed it, and it can be turned off."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    srv = configured_server(tmp_path, "[button]\ngpio = 17\n")
    driver = _driver(tmp_path / "profile", 390, 844)
    try:
        wait = _log_in(driver, srv.url)
        _new_case(driver, wait, "LAB-BUTTON")
        driver.find_element(By.ID, "show-case").click()
        arm = driver.find_element(By.ID, "button-arm")
        WebDriverWait(driver, 10).until(lambda d: arm.is_displayed())
        assert driver.find_element(By.ID, "cc-button-text").text == "The Pi's button does not feed this case."
        arm.click()
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "cc-button-text").text.startswith(
            "The Pi's button analyses a field into this case (armed by admin"))
        assert arm.text == "Stop using the Pi's button"
        assert driver.find_element(By.ID, "saved").text == "Saved: the Pi's button now analyses into case LAB-BUTTON."
        arm.click()
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "cc-button-text").text ==
                                        "The Pi's button does not feed this case.")
        status = driver.execute_script("return fetch('/api/status').then(r => r.json())")
        assert status["button"]["gpio"] == 17 and not status["button"]["working"]
        assert any(r.startswith("the GPIO button on pin 17 is not working") for r in status["degraded_reasons"])
    finally:
        driver.quit()
        srv.stop()
