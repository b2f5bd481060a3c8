//! `OptionalJson`: a JSON body that may be left out entirely, Content-Type included.
//!
//! poem-openapi's `Json<Option<T>>` still insists on a `Content-Type` header when there is no
//! body, which breaks `POST /auth/refresh` with only the refresh cookie. This extractor accepts
//! an empty body with no type and otherwise behaves like `Json<T>`.

use std::marker::PhantomData;

use bytes::Bytes;

use poem::{FromRequest, IntoResponse, Request, RequestBody, Response, Result};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    error::{ContentTypeError, ParseRequestPayloadError},
    payload::Payload,
    registry::{MetaMediaType, MetaRequest, MetaSchemaRef, Registry},
    types::{ParseFromJSON, Type},
};

pub struct OptionalJson<T>(pub Option<T>);

impl<'a, T: ParseFromJSON + Type> ApiExtractor<'a> for OptionalJson<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: T::schema_ref(),
            }],
            required: false,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> Result<Self> {
        let data = <Vec<u8> as FromRequest>::from_request(request, body).await?;
        if data.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        match request.content_type() {
            None => return Err(ContentTypeError::ExpectContentType.into()),
            Some(ct) if !is_json(ct) => {
                return Err(ContentTypeError::NotSupported {
                    content_type: ct.to_string(),
                }
                .into());
            }
            Some(_) => {}
        }
        let value: serde_json::Value =
            serde_json::from_slice(&data).map_err(|e| ParseRequestPayloadError {
                reason: e.to_string(),
            })?;
        let parsed = T::parse_from_json(Some(value)).map_err(|e| ParseRequestPayloadError {
            reason: e.into_message(),
        })?;
        Ok(Self(Some(parsed)))
    }
}

/// A JSON body encoded earlier (a cached page): documented as `T`, sent as it is, without being
/// parsed and encoded again.
pub struct EncodedJson<T>(pub Bytes, PhantomData<fn() -> T>);

impl<T> EncodedJson<T> {
    pub fn new(body: Bytes) -> Self {
        Self(body, PhantomData)
    }
}

impl<T: Type> Payload for EncodedJson<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Send> IntoResponse for EncodedJson<T> {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type("application/json; charset=utf-8")
            .body(self.0)
    }
}
/// `application/json`, or any `application/*+json` type, whatever its parameters.
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}
