"""One idempotent async function per pipeline step.

Each step first looks at what the deployment row already records, then at the cloud (by tag, IP or name),
and only then creates anything; it stores what it created before returning. A job retried after a crash
therefore resumes instead of creating a second droplet, server or application.
"""

from __future__ import annotations

from datetime import UTC, datetime

from clients.coolify import EnvVarSpec
from clients.digitalocean import Droplet, ssh_key_fingerprint
from clients.errors import APIConnectionError, ConflictError, NotFoundError, UpstreamServerError
from jobs.buildlog import failure_tail
from jobs.envstash import forget_deploy_env
from jobs.errors import StepFailedError
from jobs.run import Run
from jobs.spec import DockerSource, GitSource
from jobs.validation import validate_until_usable
from models.deployment import DeploymentStage, DeploymentStatus

#: Tag on every droplet deployer creates, so a sweep can find orphans.
OWNER_TAG = "deployer"
SSH_KEY_NAME = "deployer-coolify"
#: Lookups of the deployment's tag after a create whose answer was lost, spread over `create_lookup_s`.
CREATE_LOOKUPS = 5


def application_marker(run: Run) -> str:
    """The description deployer gives the Coolify server and application, which identifies its deployment."""
    return f"deployer deployment {run.deployment.id}"


def deployment_tag(run: Run) -> str:
    """The tag naming one deployment's droplet (tags allow letters, digits, '-', '_' and ':')."""
    return f"deployer-{run.deployment.id}"


async def create_droplet(run: Run) -> None:
    """Create the droplet (or adopt the one a previous attempt created) and store its id at once."""
    deployment = run.deployment
    spec = run.spec()
    if deployment.droplet_id is not None:
        await run.event(
            f"Droplet {deployment.droplet_id} already exists; resuming", stage=DeploymentStage.CREATE_DROPLET
        )
        return
    interrupted = deployment.stage == DeploymentStage.CREATE_DROPLET  # an earlier attempt got this far
    await run.event(
        f"Creating droplet {deployment.droplet_name} ({spec.size} in {spec.region}, image {spec.image})",
        stage=DeploymentStage.CREATE_DROPLET,
        status=DeploymentStatus.PROCESSING,
    )
    do = run.deps.digitalocean
    existing = await do.list_droplets(tag_name=deployment_tag(run))
    found = existing[0] if existing else None
    if found is None and interrupted:
        # The earlier attempt may have sent the create just before it died, and the list can lag a create.
        found = await _find_uncertain_droplet(run)
    if found is not None:
        await run.event(f"Adopted droplet {found.id} created by an earlier attempt", droplet_id=found.id)
        return
    key = await do.ensure_ssh_key(name=SSH_KEY_NAME, public_key=run.deps.config.ssh_public_key)
    try:
        droplet = await do.create_droplet(
            name=str(deployment.droplet_name),
            region=spec.region,
            size=spec.size,
            image=spec.image,
            ssh_keys=[key.fingerprint],
            tags=[OWNER_TAG, deployment_tag(run)],
        )
    except (APIConnectionError, UpstreamServerError) as exc:
        # The create may have happened anyway, and DigitalOcean's list can lag a create: look a few times
        # before anyone creates again.
        found = await _find_uncertain_droplet(run)
        if found is None:
            raise
        droplet = found
        await run.event(f"The create answered {exc.__class__.__name__}, but droplet {droplet.id} exists; adopting it")
    except ConflictError as exc:
        raise StepFailedError(f"DigitalOcean refused to create the droplet: {exc.message}") from exc
    await run.event(f"Droplet {droplet.id} created (status {droplet.status})", droplet_id=droplet.id)


async def _find_uncertain_droplet(run: Run) -> Droplet | None:
    """Look the deployment's tag up `CREATE_LOOKUPS` times over `create_lookup_s`; the droplet if it shows."""
    window = run.deps.config.create_lookup_s
    for lookup in range(1, CREATE_LOOKUPS + 1):
        await run.sleep(window / CREATE_LOOKUPS)
        try:
            existing = await run.deps.digitalocean.list_droplets(tag_name=deployment_tag(run))
        except (APIConnectionError, UpstreamServerError):
            existing = []
        if existing:
            return existing[0]
        await run.event(f"Droplet not listed yet after an uncertain create (lookup {lookup}/{CREATE_LOOKUPS})")
    return None


async def wait_droplet(run: Run) -> None:
    """Poll the droplet until it is active and has a public IPv4; store the address."""
    deployment = run.deployment
    droplet_id = deployment.droplet_id
    assert droplet_id is not None
    if deployment.ip_address:
        return
    await run.event("Waiting for the droplet to boot", stage=DeploymentStage.WAIT_DROPLET)

    timings = run.deps.config.timings
    polls = run.deps.polls

    async def check(attempt: int) -> tuple[str | None, str]:
        # The shared tag list answers for every waiting deployment at once; a droplet it does not show yet (a
        # list lags a create) or a list call that failed is read by id.
        listed = None if polls is None else await polls.droplet(droplet_id, timings.droplet_poll_interval_s)
        if listed is not None:
            status, ip = listed.status, listed.public_ipv4
        else:
            try:
                droplet = await run.deps.digitalocean.get_droplet(droplet_id)
            except NotFoundError:
                return None, "droplet not visible yet (404)"
            status, ip = droplet.status, droplet.public_ipv4
        if status == "active" and ip:
            return ip, "active"
        if status == "active":
            return None, "status active, no public IPv4 yet"
        return None, f"status {status}"

    ip = await run.poll(
        "the droplet to be active with a public IPv4",
        check,
        interval=timings.droplet_poll_interval_s,
        timeout=timings.droplet_timeout_s,
    )
    await run.event(f"Droplet is active at {ip}", ip_address=ip)


async def _private_key_uuid(run: Run) -> str:
    config = run.deps.config
    if config.coolify_private_key_uuid:
        return config.coolify_private_key_uuid
    wanted = " ".join(config.ssh_public_key.split()[:2])
    for key in await run.deps.coolify.list_private_keys():
        if " ".join((key.public_key or "").split()[:2]) == wanted:
            return key.uuid
    raise StepFailedError(
        "No Coolify private key matches COOLIFY_SSH_PUBLIC_KEY; add it in Coolify or set COOLIFY_PRIVATE_KEY_UUID"
    )


async def register_server(run: Run) -> None:
    """Register the droplet as a Coolify server (or adopt the one this deployment registered earlier).

    DigitalOcean reuses IP addresses, so a server already registered at this IP is adopted only when its
    description names this deployment; any other is a conflict the operator must clear.
    """
    deployment = run.deployment
    if deployment.server_uuid:
        return
    ip = str(deployment.ip_address)
    await run.event(f"Registering {ip} as a Coolify server", stage=DeploymentStage.REGISTER_SERVER)
    coolify = run.deps.coolify
    # Only an earlier attempt (or an earlier try of this step) can have registered a server without storing
    # it. Otherwise the list is skipped (every server of the team, read once per deployment: quadratic in a
    # fleet): Coolify refuses a second server at an IP (400 "already in use"), and that refusal is handled below.
    may_exist = run.may_have_created(DeploymentStage.REGISTER_SERVER)
    server_uuid = await _our_server_at(run, ip) if may_exist else None
    if server_uuid is not None:
        await run.event(
            f"Adopted Coolify server {server_uuid} registered by an earlier attempt", server_uuid=server_uuid
        )
        return
    run.sent.add(DeploymentStage.REGISTER_SERVER)
    try:
        server_uuid = await coolify.create_server(
            name=str(deployment.droplet_name),
            ip=ip,
            private_key_uuid=await _private_key_uuid(run),
            description=application_marker(run),
        )
    except ConflictError as exc:  # 400 "already in use": someone registered this IP meanwhile
        server_uuid = await _our_server_at(run, ip)
        if server_uuid is None:
            raise StepFailedError(f"Coolify refused the server: {exc.message}") from exc
    except NotFoundError as exc:
        raise StepFailedError(f"Coolify refused the server: {exc.message}") from exc
    await run.event(f"Coolify server {server_uuid} registered", server_uuid=server_uuid)


async def _our_server_at(run: Run, ip: str) -> str | None:
    """The uuid of this deployment's server at `ip`; a conflict error if another server holds the IP."""
    for server in await run.deps.coolify.list_servers():
        if server.ip != ip:
            continue
        if server.description == application_marker(run):
            return server.uuid
        raise StepFailedError(
            f"Coolify already has a server at {ip} (uuid {server.uuid}, name {server.name!r}) that this deployment"
            " did not register. DigitalOcean reuses IP addresses: if it belongs to a droplet that no longer"
            " exists, delete that server in Coolify and deploy again."
        )
    return None


async def validate_server(run: Run) -> None:
    """Have Coolify validate the server and install Docker, waiting out a late sshd; store that it is done."""
    deployment = run.deployment
    if deployment.server_validated_at is not None:
        return
    await run.event("Validating the server in Coolify", stage=DeploymentStage.VALIDATE_SERVER)
    config = run.deps.config
    key = config.coolify_private_key_uuid or "found by COOLIFY_SSH_PUBLIC_KEY"
    try:
        fingerprint = ssh_key_fingerprint(config.ssh_public_key)
    except ValueError:
        fingerprint = "unreadable"
    hint = (
        f"Check that COOLIFY_SSH_PUBLIC_KEY (MD5 {fingerprint}, given to DigitalOcean for the droplet's root login)"
        f" is the public half of Coolify's private key ({key})."
    )
    await validate_until_usable(run, str(deployment.server_uuid), key_hint=hint)
    await run.event("Server is reachable and usable", server_validated_at=datetime.now(UTC))


async def create_application(run: Run) -> None:
    """Create the Coolify application with its default environment (or adopt an earlier attempt's)."""
    deployment = run.deployment
    coolify = run.deps.coolify
    config = run.deps.config
    spec = run.spec()
    if not deployment.application_uuid:
        await run.event(f"Creating Coolify application {spec.name}", stage=DeploymentStage.CREATE_APPLICATION)
        # An earlier attempt may have created it before it could store the uuid: the description names the
        # deployment, so even a user-chosen (not unique) name is adopted only when it is ours. A first attempt
        # cannot have, and skips the list (every application of the team: quadratic in a fleet).
        marker = application_marker(run)
        may_exist = run.may_have_created(DeploymentStage.CREATE_APPLICATION)
        listed = await coolify.list_applications() if may_exist else []
        adopted = next((app for app in listed if app.name == spec.name and app.description == marker), None)
        if adopted is not None:
            app_uuid, domains = adopted.uuid, adopted.fqdn
        else:
            common = {
                "project_uuid": config.coolify_project_uuid,
                "environment_name": config.coolify_environment_name,
                "server_uuid": str(deployment.server_uuid),
                "name": spec.name,
                "ports_exposes": spec.ports,
                "description": marker,
                "domains": spec.domains,
            }
            run.sent.add(DeploymentStage.CREATE_APPLICATION)
            try:
                if isinstance(spec.source, GitSource):
                    app = await coolify.create_public_application(
                        git_repository=spec.source.repository,
                        git_branch=spec.source.branch,
                        build_pack=spec.source.build_pack,
                        base_directory=spec.source.base_directory,
                        **common,  # type: ignore[arg-type]
                    )
                else:
                    assert isinstance(spec.source, DockerSource)
                    app = await coolify.create_dockerimage_application(
                        image=spec.source.image,
                        tag=spec.source.tag,
                        **common,  # type: ignore[arg-type]
                    )
            except (ConflictError, NotFoundError) as exc:
                raise StepFailedError(f"Coolify refused the application: {exc.message}") from exc
            app_uuid, domains = app.uuid, app.fqdn
        await run.event(
            f"Coolify application {app_uuid} created", application_uuid=app_uuid, application_domains=domains
        )
    if run.env:
        specs = [EnvVarSpec(key=key, value=value) for key, value in run.env]
        try:
            await coolify.bulk_update_envs(str(deployment.application_uuid), specs)
        except ConflictError as exc:
            raise StepFailedError(f"Coolify refused the environment: {exc.message}") from exc
        keys = ", ".join(key for key, _ in run.env)
        await run.event(f"Set {len(specs)} environment variable(s): {keys}")


async def start_deployment(run: Run) -> None:
    """Ask Coolify to deploy the application and store the deployment uuid it returns."""
    deployment = run.deployment
    if deployment.coolify_deployment_uuid:
        return
    app_uuid = str(deployment.application_uuid)
    await run.event("Starting the Coolify deployment", stage=DeploymentStage.START_DEPLOYMENT)
    await forget_deploy_env(run.deps.redis, deployment.id)  # recorded past the env step: values not needed again
    result = await run.deps.coolify.deploy(app_uuid)
    if not result.deployment_uuid:
        raise StepFailedError(f"Coolify accepted the deploy but returned no deployment: {result.message}")
    note = " (already queued)" if result.already_queued else ""
    await run.event(
        f"Coolify deployment {result.deployment_uuid} queued{note}",
        coolify_deployment_uuid=result.deployment_uuid,
    )


async def wait_build(run: Run) -> None:
    """Poll the Coolify deployment until it finishes; a failed or cancelled build fails the step with the last
    lines of its output."""
    deployment_uuid = str(run.deployment.coolify_deployment_uuid)
    timings = run.deps.config.timings
    await run.event("Waiting for the build", stage=DeploymentStage.WAIT_BUILD)

    polls = run.deps.polls

    async def check(attempt: int) -> tuple[str | None, str]:
        # While Coolify's shared list of running deployments shows the build, it is still queued or running;
        # once it is not listed (or the list failed), one read by uuid says how it ended.
        listed = None if polls is None else await polls.build(deployment_uuid, timings.build_poll_interval_s)
        if listed is not None:
            return None, f"build {listed.status}"
        build = await run.deps.coolify.get_deployment(deployment_uuid)
        if build.status == "finished":
            return build.status, "finished"
        if build.terminal:
            # Coolify marks the deployment failed before it writes the failure into its logs
            # (ApplicationDeploymentJob::failed): read them once more a moment later.
            await run.sleep(min(timings.build_poll_interval_s, 2.0))
            build = await run.deps.coolify.get_deployment(deployment_uuid)
            tail = failure_tail(build.log or (), secrets=[value for _, value in run.env])
            if not tail:
                raise StepFailedError(f"Coolify build {deployment_uuid} ended with status {build.status}")
            await run.event(f"Last lines of the build output:\n{tail}")
            raise StepFailedError(
                f"Coolify build {deployment_uuid} ended with status {build.status}; last lines of its output:\n{tail}"
            )
        return None, f"build {build.status}"

    await run.poll(
        "the build to finish", check, interval=timings.build_poll_interval_s, timeout=timings.build_timeout_s
    )
