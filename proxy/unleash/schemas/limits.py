"""The bounds on names and numbers in the bodies SDKs and proxies post, as msgspec constraints.

Each limit is Unleash's own where Unleash has one, so a body the proxy accepts is one Unleash would
have taken: a longer name would only end upstream as a refused row. docs/limits.md lists every
limit with the place in Unleash it comes from. The wire Structs (client.py, impact.py, custom.py)
use these types, so the limits are checked while decoding (a 400 naming the field) and appear in
/openapi.json as minLength/maxLength/maximum.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

# Unleash's `nameType` (src/lib/routes/util.ts): 1 to 100 characters. Feature, variant, strategy
# and project names are all of that type; its metrics service checks reported flag names with it.
UNLEASH_NAME_MAX = 100
# Unleash keeps app names, instance ids and SDK versions in varchar(255) columns
# (client_applications.app_name, client_instances.instance_id, client_instances.sdk_version).
UNLEASH_TEXT_MAX = 255
# client_metrics_env.environment is varchar(100).
ENVIRONMENT_MAX = 100
# Unleash Edge reads a registration's `interval` as a u32 (unleash-types ClientApplication), the
# same bound the proxy already puts on counts.
INTERVAL_MAX = 4_294_967_295

FlagName = Annotated[str, msgspec.Meta(
    min_length=1, max_length=UNLEASH_NAME_MAX, description="a flag name: 1 to 100 characters, as Unleash allows")]
VariantName = Annotated[str, msgspec.Meta(
    min_length=1, max_length=UNLEASH_NAME_MAX, description="a variant name: 1 to 100 characters, as Unleash allows")]
# An empty strategy name is dropped like a null (Unleash strips entries that are no Joi string).
StrategyName = Annotated[str, msgspec.Meta(
    max_length=UNLEASH_NAME_MAX, description="a strategy name: up to 100 characters, as Unleash allows")]
ProjectName = Annotated[str, msgspec.Meta(
    min_length=1, max_length=UNLEASH_NAME_MAX, description="a project id: 1 to 100 characters, as Unleash allows")]
AppName = Annotated[str, msgspec.Meta(min_length=1, max_length=UNLEASH_TEXT_MAX)]
# Empty means "default", as in Unleash.
InstanceId = Annotated[str, msgspec.Meta(max_length=UNLEASH_TEXT_MAX)]
SdkVersion = Annotated[str, msgspec.Meta(max_length=UNLEASH_TEXT_MAX)]
EnvironmentName = Annotated[str, msgspec.Meta(min_length=1, max_length=ENVIRONMENT_MAX)]
Interval = Annotated[float, msgspec.Meta(
    ge=0, le=INTERVAL_MAX, description="how often the SDK sends metrics (as the SDK counts it, usually ms)")]

# Impact and custom metrics: Unleash sets no length on their names or labels (its Joi schemas take
# any string), so the proxy's own bound, the length of an app name, which SDKs add as a label.
METRIC_TEXT_MAX = UNLEASH_TEXT_MAX
MetricName = Annotated[str, msgspec.Meta(min_length=1, max_length=METRIC_TEXT_MAX)]
LabelName = Annotated[str, msgspec.Meta(min_length=1, max_length=METRIC_TEXT_MAX)]
LabelValue = Annotated[str, msgspec.Meta(max_length=METRIC_TEXT_MAX)]
