-- Rendered from mesh/services.toml by scripts/render_manifests.py. Run once by the postgres
-- image on its first start (docker-compose.postgres.yml, and the Helm chart's bundled
-- PostgreSQL): one database per service, as each service owns its data. Tables come from
-- each service's migrations when it starts.
CREATE DATABASE "inventory";
CREATE DATABASE "order";
CREATE DATABASE "notification";
