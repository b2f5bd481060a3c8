//! The guide's endpoint example (docs/extending.md, "Add an endpoint"): a route group of its
//! own, authorised through `Auth`, calling a domain service, answering problem+json on bad
//! input, and documented in the same spec as Keel's own operations.
//!
//! In a fork the module `greetings` below is `src/http/api/greetings.rs`, its tag a variant of
//! `ApiTags`, and the route group one line in `route_groups!` (`src/http/api/mod.rs`). Here,
//! outside the crate, the same module is mounted with `keel::http::BoundServer::run_with`,
//! which serves Keel's route groups followed by yours.
//!
//! `cargo run --example endpoint` serves it with the embedded defaults on 127.0.0.1:8000
//! (`/docs` lists `GET /greetings`); `cargo test --example endpoint` runs its tests (the test
//! command does).

use std::{collections::HashMap, time::Duration};

use keel::{
    config::Settings,
    http::{BoundServer, state::AppState},
};

/// The route group: in a fork, `src/http/api/greetings.rs`.
mod greetings {
    use keel::http::{error::ApiResult, extractors::Auth, state::AppState};
    use poem::web::Data;
    use poem_openapi::{Object, OpenApi, Tags, param::Query, payload::Json};

    /// In a fork: a variant of `ApiTags` in `src/http/api/mod.rs`.
    #[derive(Tags)]
    enum Tag {
        /// Greetings for the signed-in user
        Greetings,
    }

    /// What `GET /greetings` answers.
    #[derive(Object, Debug)]
    pub struct Greeting {
        /// The salutation and the user's name.
        pub message: String,
        /// How many sessions the user is signed in with.
        pub sessions: u64,
    }

    pub struct GreetingsApi;

    #[OpenApi(tag = "Tag::Greetings")]
    impl GreetingsApi {
        /// Greet the signed-in user
        ///
        /// Answers with the user's name and how many sessions they are signed in with.
        #[oai(path = "/greetings", method = "get", operation_id = "greetings_get")]
        async fn greet(
            &self,
            state: Data<&AppState>,
            auth: Auth,
            /// The word to greet with; `Hello` when absent.
            #[oai(validator(min_length = 1, max_length = 20))]
            salutation: Query<Option<String>>,
        ) -> ApiResult<Json<Greeting>> {
            // Parse and authorise here; the rules live in the domain service.
            let principal = auth.session()?;
            let sessions = state
                .accounts
                .sessions()
                .list_sessions(principal.user.id)
                .await?;
            let salutation = salutation.0.unwrap_or_else(|| "Hello".into());
            Ok(Json(Greeting {
                message: format!("{salutation}, {}!", principal.user.username),
                sessions: sessions.len() as u64,
            }))
        }
    }
}

/// A server on the embedded defaults (SQLite in a temporary file, in-process jobs, mail to the
/// log) with the greetings mounted beside Keel's routes.
struct Served {
    base: String,
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    file: std::path::PathBuf,
}

async fn serve(addr: &str) -> Served {
    let file = std::env::temp_dir().join(format!("keel-endpoint-{}.db", uuid::Uuid::new_v4()));
    let env = HashMap::from([
        (
            "DATABASE_URL".to_string(),
            format!("sqlite://{}?mode=rwc", file.display()),
        ),
        ("LOG_LEVEL".to_string(), "warn".to_string()),
    ]);
    let settings = Settings::from_map(&env, &keel::app::kinds()).expect("settings");
    let state = AppState::build(settings).await.expect("state");
    let server = BoundServer::bind(state.clone(), addr.parse().expect("address"))
        .await
        .expect("bind");
    let base = format!("http://{}", server.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        server
            .run_with(greetings::GreetingsApi, shutdown, Duration::from_secs(5))
            .await
            .expect("serve");
    });
    Served {
        base,
        state,
        stop: Some(stop),
        task: Some(task),
        file,
    }
}

impl Served {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.file.display()));
        }
    }
}

#[tokio::main]
async fn main() {
    let served = serve("127.0.0.1:8000").await;
    println!(
        "{} serving on {}: GET /greetings (see {}/docs); Ctrl-C stops",
        served.state.settings.project_name, served.base, served.base
    );
    let _ = tokio::signal::ctrl_c().await;
    served.stop().await;
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;
    use serde_json::Value;

    use super::*;

    const PASSWORD: &str = "Greeted-Passw0rd!";

    /// A verified account made through the account service, signed in over HTTP.
    async fn sign_in(served: &Served, client: &reqwest::Client) -> String {
        served
            .state
            .accounts
            .admin()
            .create_superuser("greeted@example.com", "greeted", PASSWORD.into())
            .await
            .expect("account");
        let login = client
            .post(format!("{}/auth/login", served.base))
            .form(&[("username", "greeted@example.com"), ("password", PASSWORD)])
            .send()
            .await
            .expect("login");
        assert_eq!(login.status(), StatusCode::OK);
        let body: Value = login.json().await.expect("tokens");
        body["access_token"]
            .as_str()
            .expect("access token")
            .to_string()
    }

    #[tokio::test]
    async fn the_endpoint_greets_the_signed_in_user() {
        let served = serve("127.0.0.1:0").await;
        let client = keel::net::http_client().build().expect("client");
        let token = sign_in(&served, &client).await;

        let answer = client
            .get(format!("{}/greetings?salutation=Welcome", served.base))
            .bearer_auth(&token)
            .send()
            .await
            .expect("greet");
        assert_eq!(answer.status(), StatusCode::OK);
        let body: Value = answer.json().await.expect("greeting");
        assert_eq!(body["message"], "Welcome, greeted!");
        assert_eq!(body["sessions"], 1);
        served.stop().await;
    }

    /// Keel's middleware guards it as it guards Keel's own operations: no token is a 401, a
    /// salutation past its limit a 4xx, both as problem+json.
    #[tokio::test]
    async fn the_endpoint_refuses_as_keel_does() {
        let served = serve("127.0.0.1:0").await;
        let client = keel::net::http_client().build().expect("client");
        let anonymous = client
            .get(format!("{}/greetings", served.base))
            .send()
            .await
            .expect("request");
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            anonymous.headers()["content-type"],
            "application/problem+json"
        );

        let token = sign_in(&served, &client).await;
        let long = client
            .get(format!(
                "{}/greetings?salutation={}",
                served.base,
                "x".repeat(21)
            ))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        assert!(long.status().is_client_error(), "{}", long.status());
        assert_eq!(long.headers()["content-type"], "application/problem+json");
        let problem: Value = long.json().await.expect("problem");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("salutation")
                || problem.to_string().contains("salutation"),
            "{problem}"
        );
        served.stop().await;
    }

    /// The spec served at `/openapi.json` documents it beside Keel's operations.
    #[tokio::test]
    async fn the_endpoint_is_in_the_spec() {
        let served = serve("127.0.0.1:0").await;
        let client = keel::net::http_client().build().expect("client");
        let spec: Value = client
            .get(format!("{}/openapi.json", served.base))
            .send()
            .await
            .expect("spec")
            .json()
            .await
            .expect("json");
        let op = &spec["paths"]["/greetings"]["get"];
        assert_eq!(op["operationId"], "greetings_get");
        assert_eq!(op["tags"][0], "Greetings");
        assert!(spec["paths"]["/auth/login"]["post"].is_object());
        assert!(spec["components"]["schemas"]["Greeting"].is_object());
        served.stop().await;
    }
}
