"""The web dashboard in real headless Chromium (selenium + Debian's chromedriver)."""
from __future__ import annotations

import shutil
import time
import uuid

import pytest

from shared import subjects
from tests.apistack import NODE, ApiStack, alert, scenario
from tests.events import container

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("chromium/chromedriver missing: run `make bootstrap`")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={tmp_path / 'chrome-profile'}", "--window-size=1400,1700"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_dashboard_shows_live_alerts_events_containers_tree_and_graph(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def wait(cond, what, timeout=20):
        return WebDriverWait(browser, timeout, poll_frequency=0.1).until(lambda d: cond(), message=what)

    with ApiStack(tmp_path / "stack") as st:
        tag = uuid.uuid4().hex[:6]
        web = container(f"web-{tag}")
        evs = scenario(web, time.time_ns() - 5 * 10**9, cgroup_id=8101, pid=300)
        # a CRI container of a Kubernetes pod (the kubelet's labels name its namespace and pod)
        ns = f"shop-{tag}"
        pod_ctr = container(f"app-{tag}")
        pod_ctr["labels"] = {"io.kubernetes.pod.namespace": ns, "io.kubernetes.pod.name": "web-7d4b9c8f5d-x2x9q"}
        pod_evs = scenario(pod_ctr, time.time_ns() - 4 * 10**9, cgroup_id=8102, pid=400)
        for e in pod_evs:
            e["k8s"] = {"pod": "web-7d4b9c8f5d-x2x9q", "namespace": ns, "labels": {"app": "web"}}
        st.publish(subjects.event(NODE, "exec"), evs + pod_evs)
        st.wait_stored(len(evs) + len(pod_evs))

        browser.get(f"{st.url}/?token={st.token}")
        # the token moves from the URL into localStorage
        wait(lambda: browser.execute_script("return localStorage.getItem('eunomia.token')") == st.token, "token stored")
        assert "token=" not in browser.current_url
        wait(lambda: "on" in browser.find_element(By.ID, "ws-status").get_attribute("class"), "live socket open")

        # live alert published on the bus appears in the alerts panel
        rule = f"Shell in container {tag}"
        st.publish(subjects.alert("critical"), [alert(web, time.time_ns(), rule=rule, priority="CRITICAL",
                                                      output=f"shell spawned in {web['name']} (<b>not html</b>)")])
        li = wait(lambda: browser.find_elements(By.CSS_SELECTOR, f'#alerts-list li[data-rule="{rule}"]'),
                  "alert shown")[0]
        assert "critical" in li.get_attribute("class")
        assert "(<b>not html</b>)" in li.text      # event text is shown as text, never as markup

        # container list, grouped by namespace: the pod's container under its namespace's heading
        wait(lambda: web["name"] in browser.find_element(By.ID, "containers-table").text, "container listed")
        grouped = wait(lambda: browser.execute_script(
            "return [...document.querySelectorAll('#containers-table tbody tr')]"
            ".map(r => [r.className, r.dataset.namespace, r.innerText])") or None, "container rows")
        heads = [ns_ for cls, ns_, _ in grouped if "group" in cls]
        assert heads[0] == ns and heads[-1] == ""          # namespaces first, the rest last
        i = next(i for i, (cls, ns_, _) in enumerate(grouped) if "group" in cls and ns_ == ns)
        assert pod_ctr["name"] in grouped[i + 1][2] and "web-7d4b9c8f5d-x2x9q" in grouped[i + 1][2]
        # choosing the namespace searches its events
        browser.find_element(By.CSS_SELECTOR, f'#containers-table tr.group[data-namespace="{ns}"]').click()
        wait(lambda: browser.execute_script(
            "const r = [...document.querySelectorAll('#events-table tbody tr[data-kind]')];"
            f"return r.length > 0 && r.every(x => x.innerText.includes('{ns}/web-7d4b9c8f5d-x2x9q/'))"),
            "events of the namespace")
        form = browser.find_element(By.ID, "event-form")
        form.find_element(By.NAME, "namespace").clear()

        # event search: kind=open in this container -> its 20 open events
        form = browser.find_element(By.ID, "event-form")
        form.find_element(By.NAME, "kind").send_keys("open")
        form.find_element(By.NAME, "container").send_keys(web["name"])
        Select(form.find_element(By.NAME, "limit")).select_by_visible_text("25")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

        def open_rows():  # read the table in one script: the page may re-render it meanwhile
            rows = browser.execute_script(
                "return [...document.querySelectorAll('#events-table tbody tr[data-kind]')]"
                ".map(r => [r.dataset.kind, r.innerText])")
            return rows if rows and all(k == "open" for k, _ in rows) else None
        rows = wait(open_rows, "event rows")
        assert len(rows) == 20 and "/etc/file19" in rows[0][1]
        # a bad search shows the API's reason
        form.find_element(By.NAME, "pid").send_keys("abc")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        err = browser.find_element(By.ID, "events-error")
        wait(lambda: err.is_displayed() and "'pid'" in err.text, "error shown")
        form.find_element(By.NAME, "pid").clear()
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(open_rows, "event rows again")

        # paging: all 26 events of the container, 25 per page
        form.find_element(By.NAME, "kind").clear()
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

        def on_page(page, n_rows):
            return browser.execute_script(
                "return [document.getElementById('events-page').textContent,"
                " document.querySelectorAll('#events-table tbody tr[data-kind]').length]") == [f"page {page}", n_rows]
        wait(lambda: on_page(1, 25), "first page of 25")
        browser.find_element(By.ID, "events-next").click()
        wait(lambda: on_page(2, 1), "second page with the oldest event")
        assert browser.find_element(By.ID, "events-next").get_attribute("disabled") is not None
        browser.find_element(By.ID, "events-prev").click()
        wait(lambda: on_page(1, 25), "back to the first page")

        # process tree of the chosen container
        Select(browser.find_element(By.ID, "tree-container")).select_by_visible_text(web["name"])
        wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#tree li[data-pid="300"] li[data-pid="301"]'),
             "process tree")
        assert "/bin/wget" in browser.find_element(By.ID, "tree").text

        # network graph drawn as SVG: the container, the external peer and the edge
        wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#graph svg circle")) >= 2, "graph nodes")
        circles = {c.get_attribute("data-id"): c.get_attribute("class")
                   for c in browser.find_elements(By.CSS_SELECTOR, "#graph svg circle")}
        assert circles[f"c:{web['id']}"] == "container" and circles["ip:10.1.2.3"] == "external"
        assert browser.find_elements(By.CSS_SELECTOR, f'#graph svg line[data-source="c:{web["id"]}"]')

        shot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not [e for e in logs if "Content Security Policy" in e["message"]], logs
