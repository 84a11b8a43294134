//! runtime-core errors as ttrpc statuses: containerd turns the gRPC code into
//! its errdefs (NotFound, AlreadyExists, FailedPrecondition...) and shows the
//! message to the user.

use runtime_core::Error;
use ttrpc::{get_status, Code};

pub fn status(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(get_status(code, msg.into()))
}

pub fn not_found(what: impl std::fmt::Display) -> ttrpc::Error {
    status(Code::NOT_FOUND, format!("{what}: not found"))
}

pub fn from_runtime(e: Error) -> ttrpc::Error {
    let code = match &e {
        Error::NotFound { .. } => Code::NOT_FOUND,
        Error::AlreadyExists { .. } => Code::ALREADY_EXISTS,
        Error::WrongState { .. } => Code::FAILED_PRECONDITION,
        Error::InvalidSpec { .. } => Code::INVALID_ARGUMENT,
        _ => Code::UNKNOWN,
    };
    status(code, e.to_string())
}

pub fn internal(e: impl std::fmt::Display) -> ttrpc::Error {
    status(Code::INTERNAL, e.to_string())
}
