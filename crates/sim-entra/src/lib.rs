//! Microsoft Graph simulator (work in progress).
