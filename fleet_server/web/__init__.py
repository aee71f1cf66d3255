"""Server-rendered dashboards (zh-CN and en): school, room, region and fleet pages built
from the same service functions as the JSON API, with SVG charts drawn on the server."""
