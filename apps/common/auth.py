"""Sign-in for the three apps: who is looking at this page.

A local account signs in with its name and password (engine.access.accounts checks it,
backs off after failures and opens a session); the session's token is kept in this browser
session's state and in a ``nodal_session`` cookie (SameSite=Strict), so a page reload
stays signed in until the session expires or the person signs out. With OpenID Connect
configured in Streamlit's secrets (``[auth]``), a "Sign in with …" button uses
``st.login``; the provider's groups claim maps to nodal groups (``NODAL_OIDC_GROUPS``).

Pages call :func:`current_user` for the acting name; the engine checks the rights.
"""

from __future__ import annotations

import json

import streamlit as st

from apps.common.context import get_settings, get_store
from engine.access import accounts, rights
from engine.access.rights import Principal
from engine.core.errors import NodalError

COOKIE = "nodal_session"
_TOKEN = "nodal_session_token"


def _write_cookie(token: str, max_age: int) -> None:
    value = json.dumps(f"{COOKIE}={token}; path=/; max-age={max_age}; SameSite=Strict")
    st.html(f"<script>document.cookie = {value};</script>", unsafe_allow_javascript=True)


def _oidc_principal() -> Principal | None:
    """The person the OpenID Connect provider signed in (st.login), if any."""
    try:
        user = st.user
        if not user.is_logged_in:
            return None
    except (AttributeError, KeyError, st.errors.StreamlitAPIException):
        return None
    settings = get_settings()
    claim = user.get(settings.oidc_groups_claim) or []
    groups = [claim] if isinstance(claim, str) else list(claim)
    name = str(user.get(settings.oidc_name_claim) or user.get("email") or user.get("sub"))
    return accounts.sign_in_external(
        get_store(settings),
        name,
        str(user.get("name") or name),
        groups,
        settings.oidc_group_map(),
    )


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except (FileNotFoundError, st.errors.StreamlitAPIException, KeyError):
        return False


def signed_in() -> Principal | None:
    """The signed-in person of this browser session, or None."""
    store = get_store(get_settings())
    token = st.session_state.get(_TOKEN) or st.context.cookies.get(COOKIE)
    token = token if isinstance(token, str) else None
    who = accounts.session_principal(store, token)
    if who is not None:
        st.session_state[_TOKEN] = token
        return who
    st.session_state.pop(_TOKEN, None)
    if _oidc_configured():
        try:
            who = _oidc_principal()
        except NodalError as exc:
            st.error(str(exc))
            return None
        if who is not None:
            st.session_state[_TOKEN] = accounts.open_session(
                store, who.name, get_settings().session_hours
            )
            return who
    return None


def require_sign_in(app_title: str) -> Principal:
    """The signed-in person; otherwise the sign-in form, and the page stops here."""
    who = signed_in()
    if who is not None:
        settings = get_settings()
        token = st.session_state[_TOKEN]
        _write_cookie(token, int(settings.session_hours * 3600))
        with st.sidebar:
            st.caption(
                f"Signed in as **{who.display_name}** (`{who.name}`)"
                + (" · administrator" if who.is_admin else "")
            )
            if st.button("Sign out", key="nodal_sign_out", icon=":material/logout:"):
                sign_out()
        return who
    _sign_in_form(app_title)
    st.stop()


def _sign_in_form(app_title: str) -> None:
    st.title(f"Sign in · {app_title}")
    store = get_store(get_settings())
    with st.form("nodal_sign_in"):
        name = st.text_input("User name", key="sign_in_name")
        password = st.text_input("Password", type="password", key="sign_in_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        try:
            who = accounts.sign_in(store, name.strip(), password)
        except NodalError as exc:
            st.error(str(exc))
        else:
            st.session_state[_TOKEN] = accounts.open_session(
                store, who.name, get_settings().session_hours
            )
            st.rerun()
    if _oidc_configured():
        st.button("Sign in with your organisation", on_click=st.login, key="nodal_oidc")
    st.caption("No account? An administrator creates one (`nodal user create`).")


def sign_out() -> None:
    accounts.close_session(get_store(get_settings()), st.session_state.pop(_TOKEN, None))
    _write_cookie("", 0)
    if _oidc_configured():
        try:
            if st.user.is_logged_in:
                st.logout()
        except (AttributeError, st.errors.StreamlitAPIException):
            pass
    st.rerun()


def current_user() -> str:
    """The acting person's name, for engine calls (the sign-in form if nobody is signed in)."""
    who = signed_in()
    if who is None:
        _sign_in_form("nodal")
        st.stop()
    return who.name


def may(right: str, **scope: str) -> bool:
    """Whether the signed-in person holds ``right`` on the scope (to hide what they may not
    do; the engine refuses it anyway)."""
    who = signed_in()
    return who is not None and rights.allowed(get_store(get_settings()), who.name, right, **scope)
