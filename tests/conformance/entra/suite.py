"""Conformance suite: Microsoft's official Python libraries (azure-identity, msgraph-sdk) against
the sim-entra simulator, over https.

It drives every Microsoft Graph call the operator's Entra ID provider makes, follows paging with
the SDK's PageIterator, and checks the error cases Graph documents. Where the official client and
the simulator disagree, the simulator is wrong.

Environment (set by crates/sim-entra/tests/conformance.rs):
  SIM_BASE            https://127.0.0.1:PORT (authority host and Graph endpoint)
  SIM_TENANT          tenant id
  SIM_APP_ID          appId of Coder's app registration
  SIM_CLIENT_ID / SIM_CLIENT_SECRET   management app with the operator's permissions
  SIM_READER_ID / SIM_READER_SECRET   management app with Application.Read.All only
  SIM_POLICY_COUNT    token lifetime policies seeded before the run
  SIM_APP_COUNT       app registrations seeded before the run
  SIM_KEYCRED_LIMIT   requests selecting keyCredentials allowed per minute
  SSL_CERT_FILE / REQUESTS_CA_BUNDLE  the CA that signed the simulator's certificate

Exit status 0 when every check passed. The last line reads "N passed, N failed".
"""

import asyncio
import os
import ssl
import sys
import time
import traceback

import httpx
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.headers_collection import HeadersCollection
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.middleware.options import RetryHandlerOption
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.applications.applications_request_builder import ApplicationsRequestBuilder
from msgraph.generated.models.application import Application
from msgraph.generated.models.application_collection_response import ApplicationCollectionResponse
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.reference_create import ReferenceCreate
from msgraph.generated.models.required_resource_access import RequiredResourceAccess
from msgraph.generated.models.resource_access import ResourceAccess
from msgraph.generated.models.token_lifetime_policy import TokenLifetimePolicy
from msgraph.generated.oauth2_permission_grants.oauth2_permission_grants_request_builder import (
    Oauth2PermissionGrantsRequestBuilder,
)
from msgraph.generated.policies.token_lifetime_policies.token_lifetime_policies_request_builder import (
    TokenLifetimePoliciesRequestBuilder,
)
from msgraph_core import GraphClientFactory, PageIterator

BASE = os.environ["SIM_BASE"].rstrip("/")
TENANT = os.environ["SIM_TENANT"]
APP_ID = os.environ["SIM_APP_ID"]
CLIENT_ID = os.environ["SIM_CLIENT_ID"]
CLIENT_SECRET = os.environ["SIM_CLIENT_SECRET"]
READER_ID = os.environ["SIM_READER_ID"]
READER_SECRET = os.environ["SIM_READER_SECRET"]
POLICY_COUNT = int(os.environ["SIM_POLICY_COUNT"])
APP_COUNT = int(os.environ["SIM_APP_COUNT"])
KEYCRED_LIMIT = int(os.environ["SIM_KEYCRED_LIMIT"])
CA_FILE = os.environ["SSL_CERT_FILE"]

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
OPENID = "37f7f235-527c-4136-accd-4a02d197296e"
PROFILE = "14dad69e-099b-42c9-810b-d002981feec1"
EMAIL = "64a6cdd6-aab1-4aaf-94b8-3cc8405e90d0"
OFFLINE_ACCESS = "7427e0e9-2fba-42fe-b0c0-848c9e6a8182"
USER_READ = "e1fe6dd8-ba31-4d61-89e7-88639da4683d"


def credential(client_id=CLIENT_ID, secret=CLIENT_SECRET):
    # A private authority is not one Microsoft's instance discovery knows, so MSAL is told not
    # to ask login.microsoftonline.com about it; it still reads the tenant's OpenID
    # configuration from the simulator.
    return ClientSecretCredential(
        TENANT,
        client_id,
        secret,
        authority=BASE,
        disable_instance_discovery=True,
    )


def graph_client(cred):
    auth = AzureIdentityAuthenticationProvider(cred, scopes=[f"{BASE}/.default"])
    ctx = ssl.create_default_context(cafile=CA_FILE)
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(verify=ctx, timeout=10.0)
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = f"{BASE}/v1.0"
    return GraphServiceClient(request_adapter=adapter), adapter


def no_retry():
    return [RetryHandlerOption(max_retries=0, delay=0, should_retry=False)]


async def expect_error(coro, status, code=None, contains=None):
    try:
        await coro
    except ODataError as e:
        assert e.response_status_code == status, f"status {e.response_status_code}, wanted {status}"
        got = e.error.code if e.error else None
        if code is not None:
            assert got == code, f"code {got!r}, wanted {code!r} ({e.error.message if e.error else ''})"
        if contains is not None:
            msg = e.error.message if e.error else ""
            assert contains in msg, f"message {msg!r} lacks {contains!r}"
        return e
    raise AssertionError(f"no error, wanted {status} {code}")


class Suite:
    def __init__(self):
        self.cred = credential()
        self.client, self.adapter = graph_client(self.cred)
        self.reader, _ = graph_client(credential(READER_ID, READER_SECRET))
        self.object_id = None
        self.policy_id = None

    # -- token service -------------------------------------------------------------------

    async def test_token_over_https_with_discovery(self):
        tok = self.cred.get_token(f"{BASE}/.default")
        assert tok.token, "no access token"
        assert tok.expires_on > time.time() + 600, "expires_on in the past"

    async def test_token_errors_are_aadsts(self):
        bad = credential(CLIENT_ID, "wrong-secret")
        try:
            bad.get_token(f"{BASE}/.default")
        except ClientAuthenticationError as e:
            assert "AADSTS7000215" in str(e), str(e)
        else:
            raise AssertionError("a wrong secret got a token")
        missing_tenant = ClientSecretCredential(
            "99999999-1111-4111-8111-111111111111",
            CLIENT_ID,
            CLIENT_SECRET,
            authority=BASE,
            disable_instance_discovery=True,
        )
        try:
            missing_tenant.get_token(f"{BASE}/.default")
        except ClientAuthenticationError as e:
            # MSAL reads the tenant's discovery document first; Entra answers 400 there.
            assert "90002" in str(e) or "OIDC Discovery" in str(e) or "authority" in str(e), str(e)
        else:
            raise AssertionError("an unknown tenant got a token")

    # -- the operator's reads ------------------------------------------------------------

    async def test_read_app_by_app_id(self):
        qp = ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(
            select=[
                "id", "appId", "displayName", "requiredResourceAccess", "isFallbackPublicClient",
                "web", "spa", "publicClient", "passwordCredentials", "keyCredentials",
                "signInAudience",
            ]
        )
        app = await self.client.applications_with_app_id(APP_ID).get(
            RequestConfiguration(query_parameters=qp)
        )
        assert app is not None and app.app_id == APP_ID, app
        assert app.id, "no object id"
        self.object_id = app.id
        graph = [r for r in app.required_resource_access if r.resource_app_id == GRAPH_APP_ID]
        assert len(graph) == 1, app.required_resource_access
        ids = {str(a.id) for a in graph[0].resource_access}
        assert USER_READ in ids and OFFLINE_ACCESS not in ids, ids
        assert app.is_fallback_public_client is True
        assert len(app.password_credentials) == 1
        pc = app.password_credentials[0]
        assert pc.secret_text is None and pc.hint == "Q~x" and pc.end_date_time is not None
        assert len(app.key_credentials) == 1 and app.key_credentials[0].usage == "Verify"
        assert app.web.redirect_uris == ["https://coder.example.com/api/v2/users/oidc/callback"]
        assert app.display_name == "Coder"

    async def test_read_app_by_object_id(self):
        app = await self.client.applications.by_application_id(self.object_id).get()
        assert app.app_id == APP_ID
        await expect_error(
            self.client.applications.by_application_id("00000000-0000-4000-8000-000000000000").get(),
            404, "Request_ResourceNotFound",
        )
        await expect_error(
            self.client.applications_with_app_id("00000000-0000-4000-8000-000000000001").get(),
            404, "Request_ResourceNotFound",
        )

    async def test_graph_service_principal_catalogue(self):
        qp = ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(
            select=["id", "appId", "oauth2PermissionScopes"]
        )
        sp = await self.client.service_principals_with_app_id(GRAPH_APP_ID).get(
            RequestConfiguration(query_parameters=qp)
        )
        assert sp.app_id == GRAPH_APP_ID and sp.id
        scopes = {s.value: str(s.id) for s in sp.oauth2_permission_scopes}
        assert scopes["offline_access"] == OFFLINE_ACCESS, scopes
        assert scopes["openid"] == OPENID
        self.graph_sp_id = sp.id

    async def test_app_service_principal_and_grants(self):
        sp = await self.client.service_principals_with_app_id(APP_ID).get()
        assert sp.app_id == APP_ID and sp.id
        qp = Oauth2PermissionGrantsRequestBuilder.Oauth2PermissionGrantsRequestBuilderGetQueryParameters(
            filter=f"clientId eq '{sp.id}' and consentType eq 'AllPrincipals'"
        )
        grants = await self.client.oauth2_permission_grants.get(RequestConfiguration(query_parameters=qp))
        assert len(grants.value) == 1, grants.value
        g = grants.value[0]
        assert g.consent_type == "AllPrincipals" and g.principal_id is None
        assert g.resource_id == self.graph_sp_id
        assert set(g.scope.split()) == {"openid", "profile", "email", "User.Read"}, g.scope
        # clientId alone returns the user consents too.
        qp = Oauth2PermissionGrantsRequestBuilder.Oauth2PermissionGrantsRequestBuilderGetQueryParameters(
            filter=f"clientId eq '{sp.id}'", top=999
        )
        grants = await self.client.oauth2_permission_grants.get(RequestConfiguration(query_parameters=qp))
        assert len(grants.value) == 2, grants.value
        # scope cannot be filtered on.
        qp = Oauth2PermissionGrantsRequestBuilder.Oauth2PermissionGrantsRequestBuilderGetQueryParameters(
            filter="scope eq 'openid'"
        )
        await expect_error(
            self.client.oauth2_permission_grants.get(RequestConfiguration(query_parameters=qp)),
            400, "Request_UnsupportedQuery",
        )

    async def test_paging_applications_with_page_iterator(self):
        first = await self.client.applications.get()
        assert isinstance(first, ApplicationCollectionResponse), type(first)
        assert len(first.value) < APP_COUNT, "the simulator pages below Graph's 100"
        assert first.odata_next_link and first.odata_next_link.startswith(f"{BASE}/v1.0/applications?")
        assert "$skiptoken=" in first.odata_next_link
        seen = []

        def collect(app):
            seen.append(app.app_id)
            return True

        it = PageIterator(first, self.adapter)
        await it.iterate(collect)
        assert len(seen) == APP_COUNT and len(set(seen)) == APP_COUNT, seen
        qp = ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(top=999)
        page = await self.client.applications.get(RequestConfiguration(query_parameters=qp))
        assert len(page.value) == APP_COUNT and page.odata_next_link is None

    # -- the operator's writes -----------------------------------------------------------

    async def test_patch_required_resource_access_and_public_client(self):
        app = await self.client.applications.by_application_id(self.object_id).get()
        rra = []
        for r in app.required_resource_access:
            if r.resource_app_id == GRAPH_APP_ID:
                have = {str(a.id) for a in r.resource_access}
                for sid in (OPENID, PROFILE, EMAIL, OFFLINE_ACCESS):
                    if sid not in have:
                        r.resource_access.append(ResourceAccess(id=sid, type="Scope"))
            rra.append(r)
        res = await self.client.applications.by_application_id(self.object_id).patch(
            Application(required_resource_access=rra, is_fallback_public_client=False)
        )
        assert res is None, "PATCH answers 204 No Content"
        after = await self.client.applications.by_application_id(self.object_id).get()
        assert after.is_fallback_public_client is False
        graph = [r for r in after.required_resource_access if r.resource_app_id == GRAPH_APP_ID][0]
        assert OFFLINE_ACCESS in {str(a.id) for a in graph.resource_access}
        assert len(after.required_resource_access) == len(app.required_resource_access), (
            "the other API's permission survives"
        )
        assert after.web.redirect_uris == app.web.redirect_uris, "untouched properties stay"

    async def test_patch_errors(self):
        await expect_error(
            self.client.applications.by_application_id(self.object_id).patch(
                Application(required_resource_access=[RequiredResourceAccess(
                    resource_app_id=GRAPH_APP_ID,
                    resource_access=[ResourceAccess(id=OPENID, type="Scopes")],
                )])
            ),
            400, "Request_BadRequest",
        )
        too_many = [
            RequiredResourceAccess(
                resource_app_id=f"00000000-0000-4000-8000-{i:012}",
                resource_access=[ResourceAccess(id=USER_READ, type="Scope")],
            )
            for i in range(51)
        ]
        await expect_error(
            self.client.applications.by_application_id(self.object_id).patch(
                Application(required_resource_access=too_many)
            ),
            400, "Directory_QuotaExceeded",
        )
        # The reader may read but not write.
        await expect_error(
            self.reader.applications.by_application_id(self.object_id).patch(Application(notes="x")),
            403, "Authorization_RequestDenied",
        )

    async def test_patch_needs_a_json_content_type(self):
        tok = self.cred.get_token(f"{BASE}/.default").token
        ctx = ssl.create_default_context(cafile=CA_FILE)
        async with httpx.AsyncClient(verify=ctx) as h:
            r = await h.patch(
                f"{BASE}/v1.0/applications/{self.object_id}",
                content=b'{"notes":"x"}',
                headers={"Authorization": f"Bearer {tok}"},
            )
            assert r.status_code == 400, r.status_code
            assert "Content-Type" in r.json()["error"]["message"], r.text
            r = await h.patch(
                f"{BASE}/v1.0/applications/{self.object_id}",
                content=b'{"notes":"x"}',
                headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"},
            )
            assert r.status_code == 204, r.text

    # -- token lifetime policies ---------------------------------------------------------

    async def test_list_policies_with_page_iterator(self):
        first = await self.client.policies.token_lifetime_policies.get()
        assert first.odata_next_link, "several pages"
        names = []

        def collect(p):
            names.append(p.display_name)
            return True

        it = PageIterator(first, self.adapter)
        await it.iterate(collect)
        assert len(names) == POLICY_COUNT, names
        qp = TokenLifetimePoliciesRequestBuilder.TokenLifetimePoliciesRequestBuilderGetQueryParameters(
            filter=f"displayName eq 'oidc-refresh-operator {APP_ID}'"
        )
        found = await self.client.policies.token_lifetime_policies.get(RequestConfiguration(query_parameters=qp))
        assert len(found.value) == 1, found.value

    async def test_create_and_assign_policy(self):
        created = await self.client.policies.token_lifetime_policies.post(
            TokenLifetimePolicy(
                definition=['{"TokenLifetimePolicy":{"Version":1,"AccessTokenLifetime":"1.00:00:00"}}'],
                display_name="conformance",
                is_organization_default=False,
            )
        )
        assert created.id and created.display_name == "conformance"
        assert created.definition == ['{"TokenLifetimePolicy":{"Version":1,"AccessTokenLifetime":"1.00:00:00"}}']
        self.policy_id = created.id
        await self.client.applications.by_application_id(self.object_id).token_lifetime_policies.ref.post(
            ReferenceCreate(odata_id=f"{BASE}/v1.0/policies/tokenLifetimePolicies/{created.id}")
        )
        assigned = await self.client.applications.by_application_id(self.object_id).token_lifetime_policies.get()
        assert [p.id for p in assigned.value] == [created.id], assigned.value
        # Only one policy per application; assigning it again is refused.
        await expect_error(
            self.client.applications.by_application_id(self.object_id).token_lifetime_policies.ref.post(
                ReferenceCreate(odata_id=f"{BASE}/v1.0/policies/tokenLifetimePolicies/{created.id}")
            ),
            400,
        )
        # Longer than one day is refused.
        await expect_error(
            self.client.policies.token_lifetime_policies.post(
                TokenLifetimePolicy(
                    definition=['{"TokenLifetimePolicy":{"Version":1,"AccessTokenLifetime":"1.00:00:01"}}'],
                    display_name="too-long",
                )
            ),
            400,
        )
        # Updating the definition.
        await self.client.policies.token_lifetime_policies.by_token_lifetime_policy_id(created.id).patch(
            TokenLifetimePolicy(
                definition=['{"TokenLifetimePolicy":{"Version":1,"AccessTokenLifetime":"02:00:00"}}']
            )
        )
        got = await self.client.policies.token_lifetime_policies.by_token_lifetime_policy_id(created.id).get()
        assert got.definition == ['{"TokenLifetimePolicy":{"Version":1,"AccessTokenLifetime":"02:00:00"}}']

    async def test_app_policies_need_policy_and_application_write_permissions(self):
        # Application.Read.All alone cannot list an app's token lifetime policies.
        await expect_error(
            self.reader.applications.by_application_id(self.object_id).token_lifetime_policies.get(),
            403, "Authorization_RequestDenied",
        )
        await expect_error(self.reader.policies.token_lifetime_policies.get(), 403, "Authorization_RequestDenied")
        await expect_error(self.reader.oauth2_permission_grants.get(), 403, "Authorization_RequestDenied")
        # ... but reads the application and service principals.
        app = await self.reader.applications_with_app_id(APP_ID).get()
        assert app.app_id == APP_ID

    # -- query validation, counting, throttling ------------------------------------------

    async def test_query_validation(self):
        qp = ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(top=1000)
        await expect_error(
            self.client.applications.get(RequestConfiguration(query_parameters=qp)),
            400, "Request_UnsupportedQuery", "Must be between 1 and 999 inclusive",
        )
        qp = ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(filter="notes eq 'x'")
        await expect_error(
            self.client.applications.get(RequestConfiguration(query_parameters=qp)),
            400, "Request_UnsupportedQuery",
            "Unsupported or invalid query filter clause specified for property 'notes' of resource 'Application'.",
        )
        qp = ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(search='"displayName:Coder"')
        await expect_error(
            self.client.applications.get(RequestConfiguration(query_parameters=qp)),
            400, "Request_UnsupportedQuery", "ConsistencyLevel: eventual",
        )
        headers = HeadersCollection()
        headers.add("ConsistencyLevel", "eventual")
        qp = ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(
            search='"displayName:Coder"', count=True
        )
        res = await self.client.applications.get(RequestConfiguration(query_parameters=qp, headers=headers))
        assert res.odata_count == 1 and res.value[0].app_id == APP_ID, res
        qp = ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(select=["bogus"])
        await expect_error(
            self.client.applications.get(RequestConfiguration(query_parameters=qp)), 400, "BadRequest"
        )

    async def test_count(self):
        await expect_error(self.client.applications.count.get(), 400, "Request_BadRequest",
                           "$count is not currently supported.")
        headers = HeadersCollection()
        headers.add("ConsistencyLevel", "eventual")
        n = await self.client.applications.count.get(RequestConfiguration(headers=headers))
        assert n == APP_COUNT, n

    async def test_key_credentials_selection_is_throttled(self):
        qp = ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(select=["id", "keyCredentials"])
        throttled = None
        for _ in range(KEYCRED_LIMIT + 1):
            try:
                await self.client.applications_with_app_id(APP_ID).get(
                    RequestConfiguration(query_parameters=qp, options=no_retry())
                )
            except ODataError as e:
                throttled = e
                break
        assert throttled is not None, "never throttled"
        assert throttled.response_status_code == 429, throttled.response_status_code
        retry_after = throttled.response_headers.get("retry-after") if throttled.response_headers else None
        assert retry_after, "no Retry-After"
        # Other selections are not throttled.
        qp = ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(select=["id", "passwordCredentials"])
        app = await self.client.applications_with_app_id(APP_ID).get(RequestConfiguration(query_parameters=qp))
        assert app.password_credentials


async def main():
    suite = Suite()
    order = [
        "test_token_over_https_with_discovery",
        "test_token_errors_are_aadsts",
        "test_read_app_by_app_id",
        "test_read_app_by_object_id",
        "test_graph_service_principal_catalogue",
        "test_app_service_principal_and_grants",
        "test_paging_applications_with_page_iterator",
        "test_patch_required_resource_access_and_public_client",
        "test_patch_errors",
        "test_patch_needs_a_json_content_type",
        "test_list_policies_with_page_iterator",
        "test_create_and_assign_policy",
        "test_app_policies_need_policy_and_application_write_permissions",
        "test_query_validation",
        "test_count",
        "test_key_credentials_selection_is_throttled",
    ]
    passed = failed = 0
    for name in order:
        start = time.monotonic()
        try:
            await getattr(suite, name)()
        except Exception:  # noqa: BLE001 - every failure is reported
            failed += 1
            print(f"FAIL {name} ({time.monotonic() - start:.2f}s)")
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f"ok   {name} ({time.monotonic() - start:.2f}s)")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
