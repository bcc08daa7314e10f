"""The admin's sign-in (the console's too): its failed attempts limited per client address and
per username, and the cookie by which a browser that signed in as a user before is exempt from
that username's limit."""
from __future__ import annotations

import unicodedata
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.crypto import constant_time_compare, salted_hmac

from core.errors import database_unreachable, storage_full
from core.ratelimit import ceiling_seconds
from core.throttling import (
    AdminLoginRateThrottle,
    AdminLoginUsernameRateThrottle,
    RateThrottle,
    login_username,
)

# Set on a successful sign-in: the user, the username and a digest of the user's password hash,
# signed. It proves only that this browser signed in as that user (knew the password) within
# DEVICE_MAX_AGE_SECONDS, and since: a new password voids it, as it ends the user's sessions
# (Django's session auth hash); it opens no session.
DEVICE_COOKIE = "admin_signed_in_as"
DEVICE_SALT = "core.admin_login.device"
DEVICE_MAX_AGE_SECONDS = 90 * 24 * 3600


def login_limited(request: HttpRequest, login: Callable[[], HttpResponse]) -> HttpResponse:
    """`login` (Django's admin login), its POSTs refused 429 once the client's address, or the
    username tried, has spent its failed attempts. The username's limit is an attacker's to
    reach on purpose, so it does not apply in a browser that signed in as that user before."""
    by_address = AdminLoginRateThrottle()
    if not by_address.allow_request(request, None):
        return _refused(by_address, "Too many login attempts from your address")
    by_username = AdminLoginUsernameRateThrottle()
    known = _known_browser(request)
    if not known and not by_username.allow_request(request, None):
        # No password was checked: the address's place is given back.
        by_address.give_back()
        # The same for every username, existing or not.
        return _refused(by_username, "Too many failed login attempts for this username")
    counted = [by_address] if known else [by_address, by_username]
    try:
        response = login()
    except Exception as exc:
        # Answered 503 (core/middleware.py OutageMiddleware) for the service's outage, not a
        # wrong password: with the database out of reach the user's row could not be read to
        # check one, and a full disk fails only a write, which only a right password makes (the
        # session it opens). Counted, an operator retrying through an outage would find the
        # admin locked once it is over.
        if database_unreachable(exc) or storage_full(exc):
            for throttle in counted:
                throttle.give_back()
        raise
    # A POST is answered with a redirect only once it logged someone in (a failure shows the
    # form again): that attempt does not count.
    if request.method == "POST" and response.status_code == 302:
        for throttle in counted:
            throttle.give_back()
        _remember_browser(response, request.user)  # type: ignore[arg-type]  # signed in: a user
    return response


def _refused(throttle: RateThrottle, reason: str) -> HttpResponse:
    wait = ceiling_seconds(throttle.wait() or 0)
    response = HttpResponse(f"{reason}; try again in {wait} s.", status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(wait)
    return response


def _known_browser(request: HttpRequest) -> bool:
    """Whether this browser signed in before as the username this POST tries."""
    value = request.COOKIES.get(DEVICE_COOKIE)
    if request.method != "POST" or not value:
        return False
    try:
        device = signing.loads(value, salt=DEVICE_SALT, max_age=DEVICE_MAX_AGE_SECONDS)
    except signing.BadSignature:
        return False
    posted = request.POST.get("username", "")
    username = login_username(posted)
    # Another username's cookie, or one of before the cookie named the password: no query.
    if not isinstance(device, dict) or device.get("username") != username:
        return False
    user_model = get_user_model()
    user = user_model._default_manager.filter(pk=device.get("user")).only(user_model.USERNAME_FIELD, "password").first()
    # Deleted, or renamed since; or another user the limit counts as this one (`Op` for `op`),
    # whose password the form checks: the user it signs in as is named as NFKC makes the POST's.
    if user is None or user.get_username() != unicodedata.normalize("NFKC", posted.strip()):
        return False
    digest = str(device.get("password", ""))
    secrets = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    return any(constant_time_compare(digest, _password_digest(user, secret)) for secret in secrets)


def _password_digest(user: AbstractBaseUser, secret: str) -> str:
    """A digest of the user's password hash: another once the password is changed. Keyed, as
    Django's session auth hash is, so that the cookie, which its holder can read, tells nothing
    of the hash."""
    return salted_hmac(f"{DEVICE_SALT}.password", user.password, secret=secret, algorithm="sha256").hexdigest()


def _remember_browser(response: HttpResponse, user: AbstractBaseUser) -> None:
    device = {
        "user": user.pk,
        "username": login_username(user.get_username()),
        "password": _password_digest(user, settings.SECRET_KEY),
    }
    response.set_cookie(
        DEVICE_COOKIE,
        signing.dumps(device, salt=DEVICE_SALT),
        max_age=DEVICE_MAX_AGE_SECONDS,
        path=reverse("admin:index"),
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Strict",
    )
