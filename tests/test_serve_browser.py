"""The chat page (serve.html) in headless Chromium, driven by Selenium through the system's chromedriver:
a streamed reply equal to the model's own, the stop button, a second turn that carries the first; a tool call
and its result shown apart from the replies, and the answer the model gives from the result."""
import shutil
import time

import pytest
from conftest import ADD, CONVERSATIONS, QUESTIONS, gated, greedy_reply, http, running

from seedgpt.chat import render_prompt
from seedgpt.generate import stream_reply
from seedgpt.tools import TOOLS

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMEDRIVER = shutil.which('chromedriver')
webdriver = pytest.importorskip('selenium.webdriver', reason='selenium is not installed (pip install -e .[test])')
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason='no chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver)')


@pytest.fixture
def browser(monkeypatch):
    monkeypatch.setenv('SE_OFFLINE', 'true')  # selenium must never download a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--window-size=900,600',
                '--no-proxy-server'):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def wait_until(check, seconds=20):
    t0 = time.monotonic()
    while not (value := check()):
        assert time.monotonic() - t0 < seconds, "timed out waiting"
        time.sleep(0.01)
    return value


def test_chat_page_streams_stops_and_continues(chat_model, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    model, tok = chat_model
    by_id = lambda name: browser.find_element(By.ID, name)  # noqa: E731
    replies = lambda: browser.find_elements(By.CSS_SELECTOR, '.msg.assistant')  # noqa: E731
    text = lambda element: element.get_attribute('textContent')  # noqa: E731  (.text would fold whitespace)
    with running(model, tok, name='tiny-chat') as url, gated(model, delay=0.05) as gate:
        browser.get(url + '/')
        wait_until(lambda: 'tiny-chat' in by_id('model').text)
        assert by_id('temperature').get_attribute('value') == '0' and by_id('top_p').get_attribute('value') == '1'

        # one question: the reply streams in (seen part-way) and ends as the model's own greedy reply
        by_id('input').send_keys(QUESTIONS[0], Keys.ENTER)
        seen = set()
        while not by_id('send').is_enabled() or not seen:
            seen.add(text(replies()[-1]))
        # the page asks for the whole context; generate_replies keeps one token free for <|end|>, so the
        # reference is the model's own token-by-token stream
        question = [{'role': 'user', 'content': QUESTIONS[0]}]
        expected = ''.join(stream_reply(model, tok, question, 64 - len(render_prompt(tok, question)), temperature=0))
        assert text(replies()[-1]) == expected
        assert any(0 < len(s) < len(expected) for s in seen), "the reply did not stream"
        browser.save_screenshot(str(tmp_path / 'serve-chat.png'))

        # a new chat, stopped after a few characters: the partial reply stays and the server drops the row
        by_id('reset').click()
        by_id('input').send_keys(QUESTIONS[1], Keys.ENTER)
        wait_until(lambda: replies() and len(text(replies()[-1])) >= 3)
        by_id('stop').click()
        wait_until(lambda: by_id('send').is_enabled())
        wait_until(lambda: http(url).get('/health').json()['running'] == 0)
        partial = text(replies()[-1])
        assert 3 <= len(partial) < len(greedy_reply(model, tok, QUESTIONS[1], 45)[0])

        # a second turn: its prompt carries the first question and the partial reply
        by_id('input').send_keys('ok', Keys.ENTER)
        wait_until(lambda: len(replies()) == 2 and by_id('send').is_enabled())
        messages = [{'role': 'user', 'content': QUESTIONS[1]}, {'role': 'assistant', 'content': partial},
                    {'role': 'user', 'content': 'ok'}]
        assert (1, len(render_prompt(tok, messages))) in gate.shapes
        assert not browser.find_elements(By.CSS_SELECTOR, '.error')
        browser.save_screenshot(str(tmp_path / 'serve-chat-2.png'))


def test_chat_page_shows_tool_calls_and_results(caller, browser, tmp_path):
    """The page offers the server's tools; the model calls calc, the page runs it through /tools/run, shows the call
    and the result in their own styles, sends them back, and the model's answer from the result ends the turn."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    model, tok = caller
    by_id = lambda name: browser.find_element(By.ID, name)  # noqa: E731
    # read in one script, so that the page re-rendering between two reads cannot leave a stale element
    shown = lambda: [tuple(row) for row in browser.execute_script(  # noqa: E731
        "return [...document.querySelectorAll('#log > div')].map(e => [e.getAttribute('class'), e.textContent])")]
    with running(model, tok, name='tiny-tools') as url, gated(model) as gate:
        browser.get(url + '/')
        wait_until(lambda: 'tiny-tools' in by_id('model').text)
        wait_until(lambda: browser.execute_script('return tools.length') == len(TOOLS))  # offered once /tools answered
        by_id('input').send_keys(ADD[0]['content'], Keys.ENTER)
        wait_until(lambda: len(shown()) == 4 and by_id('send').is_enabled())
        assert shown() == [('msg user', ADD[0]['content']), ('msg call', 'calc {"expression": "48+75"}'),
                           ('msg tool', '123'), ('msg assistant', CONVERSATIONS[0][-1]['content'])]
        # the second request carried the call and the result as the model was taught them
        assert (1, len(render_prompt(tok, CONVERSATIONS[0][:3]))) in gate.shapes
        browser.save_screenshot(str(tmp_path / 'serve-tools.png'))
