"""[launchdarkly] options: the file, the environment, the defaults and the one-line errors."""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, load_settings


def test_defaults_serve_locally_with_the_beta_header_required():
    ld = load_settings(environ={}).launchdarkly
    assert ld.access_tokens == [] and ld.require_beta_header is True and not ld.upstream
    assert (ld.refresh_interval, ld.retry_initial, ld.retry_max) == (60.0, 1.0, 300.0)


def test_file_and_environment(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[launchdarkly]\naccess_tokens = ["api-a"]\napi_url = "https://app.launchdarkly.com"\n'
                    'api_token = "api-up"\nrefresh_interval = 30\n')
    ld = load_settings(str(path), environ={}).launchdarkly
    assert ld.access_tokens == ["api-a"] and ld.upstream and ld.refresh_interval == 30
    env = {"METRICS_PROXY_LAUNCHDARKLY_ACCESS_TOKENS": "api-b, api-c",
           "METRICS_PROXY_LAUNCHDARKLY_REQUIRE_BETA_HEADER": "false"}
    ld = load_settings(str(path), environ=env).launchdarkly
    assert ld.access_tokens == ["api-b", "api-c"] and ld.require_beta_header is False
    assert ld.api_url == "https://app.launchdarkly.com"  # the file's, beside the environment's


def test_the_example_file_states_no_launchdarkly_options():
    assert load_settings("config/metrics-proxy.toml", environ={}).launchdarkly == load_settings(environ={}).launchdarkly


@pytest.mark.parametrize(("env", "needle"), [
    ({"METRICS_PROXY_LAUNCHDARKLY_API_URL": "app.launchdarkly.com",
      "METRICS_PROXY_LAUNCHDARKLY_API_TOKEN": "t"}, "launchdarkly.api_url"),
    ({"METRICS_PROXY_LAUNCHDARKLY_API_URL": "https://app.launchdarkly.com"}, "api_token"),
    ({"METRICS_PROXY_LAUNCHDARKLY_REFRESH_INTERVAL": "0"}, "launchdarkly.refresh_interval"),
])
def test_bad_options_name_the_option(env, needle):
    with pytest.raises(ConfigError) as error:
        load_settings(environ=env)
    assert needle in str(error.value)
